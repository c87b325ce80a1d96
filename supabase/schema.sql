-- The schema that supabase/migrations build, as one file: GENERATED, do not edit, do not apply.
-- Refresh after adding a migration: python -m mt5_sync.store.schema_dump
-- (pg_dump --schema-only of a freshly migrated database; see mt5_sync/store/schema_dump.py)

--
-- PostgreSQL database dump
--

--
-- Name: mt5_account_due(uuid, text, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_account_due(p_account_id uuid, p_broker_server text, p_now timestamp with time zone) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
    select not exists (select 1 from public.mt5_account_health h
                        where h.account_id = p_account_id and h.next_attempt_at > p_now)
       and not exists (select 1 from public.mt5_server_pauses s
                        where s.broker_server = p_broker_server and s.paused_until > p_now);
$$;

--
-- Name: mt5_account_freshness_at(timestamp with time zone, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_account_freshness_at(p_now timestamp with time zone, p_slo_s integer DEFAULT 900) RETURNS TABLE(account_id uuid, user_id uuid, login_number bigint, broker_name text, broker_server text, is_active boolean, last_successful_sync_at timestamp with time zone, staleness_s double precision, state text, reason text, next_attempt_at timestamp with time zone)
    LANGUAGE sql STABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
    select a.id, a.user_id, a.login_number, a.broker_name, a.broker_server, a.is_active,
           a.last_successful_sync_at,
           extract(epoch from p_now - a.last_successful_sync_at)::double precision,
           case when not a.is_active then 'inactive'
                when s.state = 'needs_credentials' then 'needs_credentials'
                when s.state in ('server_paused', 'backing_off') then 'backing_off'
                when a.last_successful_sync_at is null
                  or p_now - a.last_successful_sync_at > make_interval(secs => p_slo_s)
                    then 'stale'
                else 'ok' end,
           coalesce(s.message, s.reason),
           s.next_attempt_at
      from public.trading_accounts a
      join public.mt5_account_schedule_at(p_now) s on s.account_id = a.id
     order by a.id;
$$;

--
-- Name: mt5_account_schedule_at(timestamp with time zone, uuid[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_account_schedule_at(p_now timestamp with time zone, p_account_ids uuid[] DEFAULT NULL::uuid[]) RETURNS TABLE(account_id uuid, state text, reason text, message text, next_attempt_at timestamp with time zone, due boolean)
    LANGUAGE sql STABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
    select a.id,
           case when not a.is_active then 'inactive'
                when h.state = 'needs_credentials' then 'needs_credentials'
                when s.paused_until > p_now then 'server_paused'
                when h.next_attempt_at > p_now then 'backing_off'
                else coalesce(h.state, 'ok') end,
           case when s.paused_until > p_now and h.state is distinct from 'needs_credentials'
                then s.error_code else h.last_error_code end,
           case when not a.is_active then 'account is inactive'
                when h.state = 'needs_credentials' then
                    'the broker rejected the login (' || h.last_error_code || '): update the '
                    || 'investor password; not retried by the schedule until it changes, a '
                    || 'manual sync asks for it, or ' || to_char(h.next_attempt_at at time zone 'UTC',
                                                                 'YYYY-MM-DD HH24:MI "UTC"')
                when s.paused_until > p_now then
                    format('server %s paused: %s of %s accounts failed with %s in one cycle',
                           a.broker_server, s.accounts_failed, s.accounts_tried, s.error_code)
                when h.next_attempt_at > p_now then
                    format('backing off after %s failures in a row (%s)',
                           h.consecutive_failures, h.last_error_code)
                else null end,
           greatest(case when h.next_attempt_at > p_now then h.next_attempt_at end,
                    case when s.paused_until > p_now then s.paused_until end),
           a.is_active and public.mt5_account_due(a.id, a.broker_server, p_now)
      from public.trading_accounts a
      left join public.mt5_account_health h on h.account_id = a.id
      left join public.mt5_server_pauses s on s.broker_server = a.broker_server
     where p_account_ids is null or a.id = any (p_account_ids)
     order by a.id;
$$;

--
-- Name: mt5_acquire_sync_lease(uuid, uuid, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_acquire_sync_lease(p_account_id uuid, p_holder uuid, p_ttl_seconds integer) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
    v_granted boolean;
begin
    if p_account_id is null or p_holder is null then
        raise exception 'mt5_acquire_sync_lease: account id and holder are required'
            using errcode = 'invalid_parameter_value';
    end if;
    if p_ttl_seconds is null or p_ttl_seconds <= 0 then
        raise exception 'mt5_acquire_sync_lease: p_ttl_seconds must be positive, got %', p_ttl_seconds
            using errcode = 'invalid_parameter_value';
    end if;
    update public.trading_accounts
       set sync_lease_flow_run_id = case when sync_lease_holder = p_holder
                                         then sync_lease_flow_run_id end,
           sync_lease_holder = p_holder,
           sync_lease_until = now() + make_interval(secs => p_ttl_seconds)
     where id = p_account_id
       and (sync_lease_holder is null
            or sync_lease_holder = p_holder
            or sync_lease_until is null
            or sync_lease_until < now())
    returning true into v_granted;
    return coalesce(v_granted, false);
end
$$;

--
-- Name: mt5_backoff_delay(text, integer, uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_backoff_delay(p_kind text, p_failures integer, p_account_id uuid) RETURNS interval
    LANGUAGE sql IMMUTABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
    select case
        when p_kind = 'credentials' then
            case when p_failures <= 1 then interval '6 hours' else interval '24 hours' end
        when p_kind = 'transient' and p_failures >= 2 then
            least(interval '1 hour',
                  interval '5 minutes' * power(2, least(p_failures - 2, 16))::integer)
            * (0.8 + 0.4 * ((hashtext(p_account_id::text || ':' || p_failures) & 1023)
                            / 1023.0))
        else interval '0'
    end;
$$;

--
-- Name: mt5_break_sync_lease(uuid, uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_break_sync_lease(p_account_id uuid, p_holder uuid) RETURNS boolean
    LANGUAGE sql
    SET search_path TO 'public', 'pg_temp'
    AS $$
    with broken as (
        update public.trading_accounts
           set sync_lease_holder = null, sync_lease_until = null, sync_lease_flow_run_id = null
         where id = p_account_id and sync_lease_holder = p_holder
        returning 1
    )
    select exists (select 1 from broken);
$$;

--
-- Name: mt5_claim_cycle_accounts(uuid, text, integer, integer, uuid, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_claim_cycle_accounts(p_execution_id uuid, p_host text, p_limit integer, p_lease_seconds integer, p_flow_run_id uuid DEFAULT NULL::uuid, p_estimate_syncs integer DEFAULT 0) RETURNS TABLE(account_id uuid, login_number bigint, broker_server text, outcome text, lease_holder uuid, claims integer, detail text, median_ms integer)
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    SET "TimeZone" TO 'UTC'
    AS $$
declare
    v_cycle public.sync_cycles;
    r record;
    v_holder uuid;
    v_claims integer;
    v_outcome text;
    v_taken_over boolean;
begin
    if p_limit is null or p_limit <= 0 then
        return;
    end if;
    if p_lease_seconds is null or p_lease_seconds <= 0 then
        raise exception 'mt5_claim_cycle_accounts: p_lease_seconds must be positive, got %', p_lease_seconds
            using errcode = 'invalid_parameter_value';
    end if;
    select * into v_cycle from public.sync_cycles c where c.execution_id = p_execution_id;
    if not found then
        raise exception 'mt5_claim_cycle_accounts: unknown cycle %', p_execution_id
            using errcode = 'foreign_key_violation';
    end if;

    for r in
        select a.id, a.login_number, a.broker_server, a.sync_lease_holder, a.sync_lease_until,
               a.sync_lease_flow_run_id
          from public.trading_accounts as a
          left join public.sync_cycle_claims as c
                 on c.execution_id = p_execution_id and c.account_id = a.id
         where a.is_active
           and (v_cycle.account_ids is null or a.id = any (v_cycle.account_ids))
           and (v_cycle.excluded_ids is null or a.id <> all (v_cycle.excluded_ids))
           and (c.account_id is null
                or (c.outcome = 'claimed'
                    and (a.sync_lease_holder is null or a.sync_lease_until < now())
                    and not exists (
                        select 1 from public.sync_logs as l
                         where l.execution_id = p_execution_id and l.account_id = a.id
                           and l.status <> 'processing')))
         order by a.last_sync_at asc nulls first, a.id
         limit p_limit
           for update of a skip locked
    loop
        -- Re-read under the account's row lock. The scan's snapshot may predate another
        -- shard's claim of this account that committed while we waited for the lock (READ
        -- COMMITTED re-checks only the locked row, not the joined claim): every claimer locks
        -- the account row first, so what we read now is stable until we commit.
        select c.outcome into v_outcome
          from public.sync_cycle_claims as c
         where c.execution_id = p_execution_id and c.account_id = r.id;
        v_taken_over := found;
        if v_taken_over and (
               v_outcome <> 'claimed'
               or (r.sync_lease_holder is not null and r.sync_lease_until >= now())
               or exists (select 1 from public.sync_logs as l
                           where l.execution_id = p_execution_id and l.account_id = r.id
                             and l.status <> 'processing')) then
            continue;  -- decided by another shard meanwhile
        end if;
        if not v_taken_over and r.sync_lease_holder is not null and r.sync_lease_until >= now() then
            insert into public.sync_cycle_claims as c
                (execution_id, account_id, host, lease_holder, outcome)
            values (p_execution_id, r.id, p_host, r.sync_lease_holder, 'skipped');
            insert into public.sync_logs
                (sync_id, account_id, execution_id, flow_run_id, trigger, sync_type, status,
                 started_at, completed_at, duration_ms, error_code, error_message, details)
            values
                (gen_random_uuid(), r.id, p_execution_id, p_flow_run_id, v_cycle.trigger,
                 v_cycle.sync_type, 'skipped', now(), now(), 0, 'sync_in_progress',
                 'another sync of this account is running (its lease is renewed until '
                 || to_char(r.sync_lease_until, 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                 || '); skipped this cycle, first in line next cycle',
                 jsonb_build_object('host', p_host, 'holder_flow_run_id', r.sync_lease_flow_run_id));
            account_id := r.id; login_number := r.login_number; broker_server := r.broker_server;
            outcome := 'skipped'; lease_holder := r.sync_lease_holder; claims := 1;
            detail := coalesce(r.sync_lease_flow_run_id::text, ''); median_ms := null;
            return next;
            continue;
        end if;

        v_holder := gen_random_uuid();
        update public.trading_accounts
           set sync_lease_holder = v_holder,
               sync_lease_until = now() + make_interval(secs => p_lease_seconds),
               sync_lease_flow_run_id = null
         where id = r.id;
        insert into public.sync_cycle_claims as c
            (execution_id, account_id, host, lease_holder, outcome)
        values (p_execution_id, r.id, p_host, v_holder, 'claimed')
        on conflict on constraint sync_cycle_claims_pkey do update
           set host = excluded.host, lease_holder = excluded.lease_holder,
               outcome = 'claimed', claimed_at = now(), claims = c.claims + 1
        returning c.claims into v_claims;
        account_id := r.id; login_number := r.login_number; broker_server := r.broker_server;
        outcome := 'claimed'; lease_holder := v_holder; claims := v_claims;
        detail := case when v_taken_over then 'taken over from a holder whose lease lapsed' end;
        median_ms := null;
        if p_estimate_syncs > 0 then
            select e.median_ms into median_ms
              from public.mt5_sync_duration_estimates(array[r.id], p_estimate_syncs) as e;
        end if;
        return next;
    end loop;
end
$$;

--
-- Name: mt5_claim_manual_sync(uuid, uuid, uuid, text, integer, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_claim_manual_sync(p_account_id uuid, p_user_id uuid, p_sync_id uuid, p_sync_type text, p_window_seconds integer, p_default_estimate_seconds integer DEFAULT 30) RETURNS TABLE(outcome text, retry_after_seconds integer, estimated_duration_seconds integer, account_label text)
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    SET "TimeZone" TO 'UTC'
    AS $$
declare
    v_now timestamptz := now();
    v_previous timestamptz;
    v_label text;
    v_last timestamptz;
    v_median double precision;
begin
    if p_account_id is null or p_user_id is null or p_sync_id is null then
        raise exception 'mt5_claim_manual_sync: account id, user id and sync id are required'
            using errcode = 'invalid_parameter_value';
    end if;
    if p_sync_type is null or p_sync_type not in ('full', 'incremental') then
        raise exception 'mt5_claim_manual_sync: sync_type must be full or incremental, got %',
            p_sync_type using errcode = 'invalid_parameter_value';
    end if;
    if p_window_seconds is null or p_window_seconds <= 0 then
        raise exception 'mt5_claim_manual_sync: p_window_seconds must be positive, got %',
            p_window_seconds using errcode = 'invalid_parameter_value';
    end if;

    -- The decision: one statement. o is the row as this statement's snapshot saw it (the
    -- previous value to restore on release); a is re-checked on its latest version.
    update public.trading_accounts as a
       set last_manual_sync_at = v_now
      from public.trading_accounts as o
     where o.id = a.id
       and a.id = p_account_id
       and a.user_id = p_user_id
       and a.is_active
       and (a.last_manual_sync_at is null
            or a.last_manual_sync_at <= v_now - make_interval(secs => p_window_seconds))
    returning o.last_manual_sync_at, a.login_number::text || '@' || a.broker_server
      into v_previous, v_label;

    if not found then
        select t.last_manual_sync_at into v_last
          from public.trading_accounts as t
         where t.id = p_account_id and t.user_id = p_user_id and t.is_active;
        if not found then
            return query select 'not_found'::text, null::integer, null::integer, null::text;
        else
            -- Clamped: a claim committed after this transaction began can lie "in the future".
            return query select
                'rate_limited'::text,
                least(p_window_seconds, greatest(1, ceil(extract(epoch from
                    (v_last + make_interval(secs => p_window_seconds)) - v_now))::integer)),
                null::integer,
                null::text;
        end if;
        return;
    end if;

    insert into public.sync_logs
        (sync_id, account_id, trigger, sync_type, status, started_at, created_at, details)
    values
        (p_sync_id, p_account_id, 'manual', p_sync_type, 'processing', v_now, v_now,
         jsonb_build_object(
             'requested_by', p_user_id,
             'claimed_at', v_now,
             'previous_manual_sync_at', v_previous));

    -- Estimate: median duration of this account's last 10 successful syncs of the same type,
    -- else of any type, else the default.
    select percentile_cont(0.5) within group (order by s.duration_ms) into v_median
      from (select l.duration_ms from public.sync_logs as l
             where l.account_id = p_account_id and l.status = 'success'
               and l.duration_ms is not null and l.sync_type = p_sync_type
             order by l.started_at desc limit 10) as s;
    if v_median is null then
        select percentile_cont(0.5) within group (order by s.duration_ms) into v_median
          from (select l.duration_ms from public.sync_logs as l
                 where l.account_id = p_account_id and l.status = 'success'
                   and l.duration_ms is not null
                 order by l.started_at desc limit 10) as s;
    end if;

    return query select
        'claimed'::text,
        null::integer,
        -- greatest() ignores NULLs, so the default must be chosen first.
        greatest(1, coalesce(ceil(v_median / 1000.0)::integer, p_default_estimate_seconds)),
        v_label;
end
$$;

--
-- Name: mt5_col_bigint(jsonb, text, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_col_bigint(c jsonb, k text, n integer) RETURNS bigint[]
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$ begin return mt5_col_check(mt5_col_literal(c, k)::bigint[], k, n); end $$;

--
-- Name: mt5_col_check(anyarray, text, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_col_check(a anyarray, k text, n integer) RETURNS anyarray
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
begin
    if array_ndims(a) > 1 then
        raise exception 'payload column "%" must hold scalar values, not arrays', k
            using errcode = 'invalid_parameter_value';
    end if;
    if a is not null and coalesce(cardinality(a), 0) <> n then
        raise exception 'payload column "%" has % values, "rows" says %', k, coalesce(cardinality(a), 0), n
            using errcode = 'invalid_parameter_value';
    end if;
    return a;
end
$$;

--
-- Name: mt5_col_int(jsonb, text, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_col_int(c jsonb, k text, n integer) RETURNS integer[]
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$ begin return mt5_col_check(mt5_col_literal(c, k)::integer[], k, n); end $$;

--
-- Name: mt5_col_literal(jsonb, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_col_literal(c jsonb, k text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
begin
    return case coalesce(jsonb_typeof(c -> k), 'null')
               when 'string' then c ->> k
               when 'array' then translate((c -> k)::text, '[]', '{}')
               when 'null' then null
               else '<column ' || k || ' must be a JSON array or an array literal>'
           end;
end
$$;

--
-- Name: mt5_col_numeric(jsonb, text, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_col_numeric(c jsonb, k text, n integer) RETURNS numeric[]
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$ begin return mt5_col_check(mt5_col_literal(c, k)::numeric[], k, n); end $$;

--
-- Name: mt5_col_text(jsonb, text, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_col_text(c jsonb, k text, n integer) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
begin
    if jsonb_typeof(c -> k) = 'array' then
        return mt5_col_check(array(select e.v from jsonb_array_elements_text(c -> k)
                                                   with ordinality as e(v, o) order by e.o),
                             k, n);
    end if;
    return mt5_col_check(mt5_col_literal(c, k)::text[], k, n);
end
$$;

--
-- Name: mt5_col_timestamptz(jsonb, text, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_col_timestamptz(c jsonb, k text, n integer) RETURNS timestamp with time zone[]
    LANGUAGE plpgsql STABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$ begin return mt5_col_check(mt5_col_literal(c, k)::timestamptz[], k, n); end $$;

--
-- Name: mt5_commit_account_sync(jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_commit_account_sync(p jsonb) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    SET "TimeZone" TO 'UTC'
    AS $$
declare
    fn constant text := 'mt5_commit_account_sync';
    c_trade_cols constant text[] := array[
        'ticket', 'symbol', 'side', 'status', 'volume', 'open_price', 'open_time_utc',
        'open_time_server', 'close_price', 'close_time_utc', 'close_time_server', 'stop_loss',
        'take_profit', 'current_price', 'profit', 'swap', 'commission', 'fee', 'net_profit',
        'magic', 'comment', 'deal_count'];
    v_stage text := 'payload';
    v_sync_id uuid;
    v_account_id uuid;
    v_execution_id uuid;
    v_flow_run_id uuid;
    v_trigger text;
    v_sync_type text;
    v_status text;
    v_error_message text;
    v_error_code text;
    v_started timestamptz;
    v_completed timestamptz;
    v_duration_ms integer;
    v_cursor timestamptz;
    v_lease_holder uuid;
    v_account jsonb;
    v_snapshot jsonb;
    v_n_deals integer;
    v_n_cash integer;
    v_n_closed integer;
    v_n_open integer;
    v_n_open_rows integer;
    v_n_quarantine integer;
    v_open_positions jsonb;
    v_deals jsonb;
    v_cash jsonb;
    v_closed jsonb;
    v_old public.trading_accounts%rowtype;
    v_new public.trading_accounts%rowtype;
    v_login bigint;
    -- ledger reconciliation
    v_ledger jsonb;
    v_expected numeric;
    v_baseline numeric;
    v_balance numeric;
    v_deal_sum numeric;
    v_offset numeric;
    v_drift numeric;
    v_floating numeric;
    v_equity_drift numeric;
    v_ledger_status text;
    v_ledger_message text;
    -- error re-raise
    e_state text;
    e_message text;
    e_detail text;
    e_hint text;
    e_constraint text;
    e_table text;
    e_column text;
begin
    -- ------------------------------------------------ validate the payload header
    v_sync_id := public.mt5_payload_uuid(p, fn, 'sync_id');
    v_account_id := public.mt5_payload_uuid(p, fn, 'account_id');
    v_execution_id := public.mt5_payload_uuid(p, fn, 'execution_id', false);
    v_flow_run_id := public.mt5_payload_uuid(p, fn, 'flow_run_id', false);
    v_trigger := public.mt5_payload_choice(p, fn, 'trigger', array['scheduled', 'manual', 'backfill']);
    v_sync_type := public.mt5_payload_choice(p, fn, 'sync_type', array['full', 'incremental']);
    v_status := public.mt5_payload_choice(p, fn, 'status', array['success', 'partial']);
    v_error_message := public.mt5_payload_text(p, fn, 'error_message', false);
    v_error_code := public.mt5_payload_text(p, fn, 'error_code', false);
    v_started := public.mt5_payload_timestamptz(p, fn, 'started_at');
    v_completed := public.mt5_payload_timestamptz(p, fn, 'completed_at');
    v_cursor := public.mt5_payload_timestamptz(p, fn, 'history_cursor', false);
    v_lease_holder := public.mt5_payload_uuid(p, fn, 'lease_holder', false);
    v_account := public.mt5_payload_object(p, fn, 'account');
    v_snapshot := public.mt5_payload_object(p, fn, 'snapshot');
    v_ledger := public.mt5_payload_object(p, fn, 'ledger');
    begin
        v_expected := (v_ledger ->> 'expected_offset')::numeric;
    exception when invalid_text_representation then
        raise exception '%: payload field "ledger.expected_offset" must be a number or null', fn
            using errcode = 'invalid_parameter_value';
    end;
    -- Row lists as columns (either wire form, see the top of this file).
    v_deals := public.mt5_payload_columns(p, fn, 'deals', array[
        'ticket', 'order_ticket', 'position_id', 'time_utc', 'time_server', 'time_msc_server',
        'type', 'entry', 'magic', 'reason', 'volume', 'price', 'commission', 'swap', 'profit',
        'fee', 'symbol', 'comment', 'external_id']);
    v_cash := public.mt5_payload_columns(p, fn, 'cash_flows', array[
        'deal_ticket', 'type', 'kind', 'amount', 'time_utc', 'time_server', 'comment']);
    v_closed := public.mt5_payload_columns(p, fn, 'closed_trades', c_trade_cols);
    v_open_positions := public.mt5_payload_columns(p, fn, 'open_positions', c_trade_cols, true);
    v_n_deals := (v_deals ->> 'rows')::integer;
    v_n_cash := (v_cash ->> 'rows')::integer;
    v_n_closed := (v_closed ->> 'rows')::integer;
    -- JSON null (not fetched) and an empty list both write no open positions.
    v_n_open := (v_open_positions ->> 'rows')::integer;
    v_n_open_rows := coalesce(v_n_open, 0);
    v_deals := v_deals -> 'columns';
    v_cash := v_cash -> 'columns';
    v_closed := v_closed -> 'columns';
    v_open_positions := coalesce(v_open_positions -> 'columns', '{}'::jsonb);
    v_n_quarantine := public.mt5_payload_array_length(p, fn, 'quarantine');
    begin
        v_duration_ms := public.mt5_payload_text(p, fn, 'duration_ms', false)::integer;
    exception when invalid_text_representation or numeric_value_out_of_range then
        raise exception '%: payload field "duration_ms" must be an integer', fn
            using errcode = 'invalid_parameter_value';
    end;
    if (v_n_closed > 0 and v_closed -> 'status' is null)
       or exists (select 1 from unnest(mt5_col_text(v_closed, 'status', v_n_closed)) s
                   where s is distinct from 'closed') then
        raise exception '%: every row of "closed_trades" must have status "closed"', fn
            using errcode = 'invalid_parameter_value';
    end if;
    if (v_n_open_rows > 0 and v_open_positions -> 'status' is null)
       or exists (select 1
                    from unnest(mt5_col_text(v_open_positions, 'status', v_n_open_rows)) s
                   where s is distinct from 'open') then
        raise exception '%: every row of "open_positions" must have status "open"', fn
            using errcode = 'invalid_parameter_value';
    end if;

    -- Lock the account first: commits and failure records of one account serialize here (the
    -- lease already keeps them apart; this is the backstop), and an unknown id fails clearly.
    select * into v_old from public.trading_accounts where id = v_account_id for update;
    if not found then
        raise exception '%: unknown account_id %', fn, v_account_id
            using errcode = 'foreign_key_violation';
    end if;
    if v_account is not null then
        begin
            v_login := (v_account ->> 'login')::bigint;
        exception when invalid_text_representation or numeric_value_out_of_range then
            raise exception '%: payload field "account.login" must be an integer', fn
                using errcode = 'invalid_parameter_value';
        end;
        -- A cross-wired terminal slot must never write one account's data into another's row.
        if v_login is distinct from v_old.login_number then
            raise exception '%: account.login % does not match account % (login %)',
                fn, v_login, v_account_id, v_old.login_number
                using errcode = 'invalid_parameter_value';
        end if;
    end if;

    -- ------------------------------------------------ (b) deals
    v_stage := 'deals';
    insert into public.deals as d
        (account_id, ticket, order_ticket, position_id, time, time_server, time_msc_server,
         type, entry, magic, reason, volume, price, commission, swap, profit, fee,
         symbol, comment, external_id, created_at, updated_at)
    select distinct on (x.ticket)
           v_account_id, x.ticket, x.order_ticket, x.position_id, x.time_utc, x.time_server,
           x.time_msc_server, x.type, x.entry, x.magic, x.reason, x.volume, x.price,
           x.commission, x.swap, x.profit, x.fee, x.symbol, x.comment, x.external_id,
           v_completed, v_completed
      from unnest(
           mt5_col_bigint(v_deals, 'ticket', v_n_deals),
           mt5_col_bigint(v_deals, 'order_ticket', v_n_deals),
           mt5_col_bigint(v_deals, 'position_id', v_n_deals),
           mt5_col_timestamptz(v_deals, 'time_utc', v_n_deals),
           mt5_col_bigint(v_deals, 'time_server', v_n_deals),
           mt5_col_bigint(v_deals, 'time_msc_server', v_n_deals),
           mt5_col_int(v_deals, 'type', v_n_deals),
           mt5_col_int(v_deals, 'entry', v_n_deals),
           mt5_col_bigint(v_deals, 'magic', v_n_deals),
           mt5_col_int(v_deals, 'reason', v_n_deals),
           mt5_col_numeric(v_deals, 'volume', v_n_deals),
           mt5_col_numeric(v_deals, 'price', v_n_deals),
           mt5_col_numeric(v_deals, 'commission', v_n_deals),
           mt5_col_numeric(v_deals, 'swap', v_n_deals),
           mt5_col_numeric(v_deals, 'profit', v_n_deals),
           mt5_col_numeric(v_deals, 'fee', v_n_deals),
           mt5_col_text(v_deals, 'symbol', v_n_deals),
           mt5_col_text(v_deals, 'comment', v_n_deals),
           mt5_col_text(v_deals, 'external_id', v_n_deals))
           with ordinality as x(
           ticket, order_ticket, position_id, time_utc, time_server, time_msc_server, type,
           entry, magic, reason, volume, price, commission, swap, profit, fee, symbol, comment,
           external_id, ord)
     order by x.ticket, x.ord desc   -- a ticket sent twice: the last occurrence wins
    on conflict (account_id, ticket) do update
       set order_ticket = excluded.order_ticket,
           position_id = excluded.position_id,
           time = excluded.time,
           time_server = excluded.time_server,
           time_msc_server = excluded.time_msc_server,
           type = excluded.type,
           entry = excluded.entry,
           magic = excluded.magic,
           reason = excluded.reason,
           volume = excluded.volume,
           price = excluded.price,
           commission = excluded.commission,
           swap = excluded.swap,
           profit = excluded.profit,
           fee = excluded.fee,
           symbol = excluded.symbol,
           comment = excluded.comment,
           external_id = excluded.external_id,
           updated_at = excluded.updated_at
     where (d.order_ticket, d.position_id, d.time, d.time_server, d.time_msc_server, d.type,
            d.entry, d.magic, d.reason, d.volume, d.price, d.commission, d.swap, d.profit,
            d.fee, d.symbol, d.comment, d.external_id)
           is distinct from
           (excluded.order_ticket, excluded.position_id, excluded.time, excluded.time_server,
            excluded.time_msc_server, excluded.type, excluded.entry, excluded.magic,
            excluded.reason, excluded.volume, excluded.price, excluded.commission,
            excluded.swap, excluded.profit, excluded.fee, excluded.symbol, excluded.comment,
            excluded.external_id);

    -- ------------------------------------------------ (c) cash flows
    v_stage := 'cash_flows';
    insert into public.cash_flows as c
        (account_id, deal_ticket, type, kind, amount, time, time_server, comment,
         created_at, updated_at)
    select distinct on (x.deal_ticket)
           v_account_id, x.deal_ticket, x.type, x.kind, x.amount, x.time_utc, x.time_server,
           x.comment, v_completed, v_completed
      from unnest(
           mt5_col_bigint(v_cash, 'deal_ticket', v_n_cash),
           mt5_col_int(v_cash, 'type', v_n_cash),
           mt5_col_text(v_cash, 'kind', v_n_cash),
           mt5_col_numeric(v_cash, 'amount', v_n_cash),
           mt5_col_timestamptz(v_cash, 'time_utc', v_n_cash),
           mt5_col_bigint(v_cash, 'time_server', v_n_cash),
           mt5_col_text(v_cash, 'comment', v_n_cash))
           with ordinality as x(deal_ticket, type, kind, amount, time_utc, time_server, comment,
                                ord)
     order by x.deal_ticket, x.ord desc
    on conflict (account_id, deal_ticket) do update
       set type = excluded.type,
           kind = excluded.kind,
           amount = excluded.amount,
           time = excluded.time,
           time_server = excluded.time_server,
           comment = excluded.comment,
           updated_at = excluded.updated_at
     where (c.type, c.kind, c.amount, c.time, c.time_server, c.comment)
           is distinct from
           (excluded.type, excluded.kind, excluded.amount, excluded.time, excluded.time_server,
            excluded.comment);

    -- ------------------------------------------------ (d) trades
    v_stage := 'trades';
    insert into public.trades as t
        (account_id, ticket, symbol, side, status, volume, open_price, open_time,
         open_time_server, close_price, close_time, close_time_server, stop_loss, take_profit,
         current_price, profit, swap, commission, fee, net_profit, magic, comment, deal_count,
         created_at, updated_at)
    select distinct on (x.ticket)
           v_account_id, x.ticket, x.symbol, x.side, x.status, x.volume, x.open_price,
           x.open_time_utc, x.open_time_server, x.close_price, x.close_time_utc,
           x.close_time_server, x.stop_loss, x.take_profit, x.current_price, x.profit, x.swap,
           x.commission, x.fee, x.net_profit, x.magic, x.comment, x.deal_count,
           v_completed, v_completed
      from (
            select u.*, 1 as closed_first
              from mt5_trade_columns(v_closed, v_n_closed) as u
            union all
            select u.*, 0
              from mt5_trade_columns(v_open_positions, v_n_open_rows) as u
           ) as x
     order by x.ticket, x.closed_first desc, x.ord desc
    on conflict (account_id, ticket) do update
       set symbol = excluded.symbol,
           side = excluded.side,
           status = excluded.status,
           volume = excluded.volume,
           open_price = excluded.open_price,
           open_time = excluded.open_time,
           open_time_server = excluded.open_time_server,
           close_price = excluded.close_price,
           close_time = excluded.close_time,
           close_time_server = excluded.close_time_server,
           stop_loss = excluded.stop_loss,
           take_profit = excluded.take_profit,
           current_price = excluded.current_price,
           profit = excluded.profit,
           swap = excluded.swap,
           commission = excluded.commission,
           fee = excluded.fee,
           net_profit = excluded.net_profit,
           magic = excluded.magic,
           comment = excluded.comment,
           deal_count = excluded.deal_count,
           updated_at = excluded.updated_at
     where not (t.status = 'closed' and excluded.status = 'open')
       and (t.symbol, t.side, t.status, t.volume, t.open_price, t.open_time, t.open_time_server,
            t.close_price, t.close_time, t.close_time_server, t.stop_loss, t.take_profit,
            t.current_price, t.profit, t.swap, t.commission, t.fee, t.net_profit, t.magic,
            t.comment, t.deal_count)
           is distinct from
           (excluded.symbol, excluded.side, excluded.status, excluded.volume,
            excluded.open_price, excluded.open_time, excluded.open_time_server,
            excluded.close_price, excluded.close_time, excluded.close_time_server,
            excluded.stop_loss, excluded.take_profit, excluded.current_price, excluded.profit,
            excluded.swap, excluded.commission, excluded.fee, excluded.net_profit,
            excluded.magic, excluded.comment, excluded.deal_count);

    -- A position whose every stored trade deal the broker cancelled (BUY/SELL -> *_CANCELED,
    -- DESIGN.md) is no longer a trade: its row goes (its deals stay in the ledger).
    v_stage := 'cancelled trades';
    delete from public.trades t
     where t.account_id = v_account_id
       and t.ticket in (select x.position_id
                          from unnest(mt5_col_bigint(v_deals, 'position_id', v_n_deals),
                                      mt5_col_int(v_deals, 'type', v_n_deals))
                               as x(position_id, type)
                         where x.type in (13, 14))
       and not exists (select 1 from public.deals d
                        where d.account_id = v_account_id and d.position_id = t.ticket
                          and d.type in (0, 1));

    -- ------------------------------------------------ (e) snapshot
    if v_snapshot is not null then
        v_stage := 'snapshot';
        insert into public.account_snapshots as s
            (account_id, taken_at, balance, equity, margin, free_margin, margin_level, created_at)
        select v_account_id, x.taken_at, x.balance, x.equity, x.margin, x.free_margin,
               x.margin_level, v_completed
          from jsonb_to_record(v_snapshot) as x(
               taken_at timestamptz, balance numeric(28, 8), equity numeric(28, 8),
               margin numeric(28, 8), free_margin numeric(28, 8), margin_level numeric(28, 8))
        on conflict (account_id, taken_at) do update
           set balance = excluded.balance,
               equity = excluded.equity,
               margin = excluded.margin,
               free_margin = excluded.free_margin,
               margin_level = excluded.margin_level
         where (s.balance, s.equity, s.margin, s.free_margin, s.margin_level)
               is distinct from
               (excluded.balance, excluded.equity, excluded.margin, excluded.free_margin,
                excluded.margin_level);
    end if;

    -- ------------------------------------------------ (f) quarantine
    v_stage := 'quarantine';
    insert into public.sync_quarantine
        (sync_id, kind, ordinal, account_id, ticket, reasons, record, created_at)
    select v_sync_id, coalesce(e.j ->> 'kind', 'unknown'), e.ord::integer, v_account_id,
           (e.j ->> 'ticket')::bigint, coalesce(e.j ->> 'reasons', ''),
           coalesce(e.j -> 'record', 'null'::jsonb), v_completed
      from jsonb_array_elements(p -> 'quarantine') with ordinality as e(j, ord)
    on conflict (sync_id, kind, ordinal) do nothing;

    -- ------------------------------------------------ (k) ledger reconciliation
    -- MT5's balance is the sum of every balance-moving deal (all but DEAL_TYPE_CREDIT = 3).
    -- offset = balance - sum over the STORED deals: 0 when they reach back to the account's
    -- first deal, the balance before the first synced window otherwise -- constant either way
    -- while the ledger is complete. The client sends "ledger" only when it read the history
    -- without error, and "ledger.expected_offset" = 0 when the terminal reported no deal
    -- before the window (the window holds the whole history). A different offset is a gap:
    -- deals missing or changed after the fact. The sync is then partial and the cursor stays.
    if v_account is not null and v_ledger is not null then
        v_stage := 'ledger';
        select coalesce(sum(d.profit + d.swap + d.commission + d.fee), 0)
          into v_deal_sum
          from public.deals d
         where d.account_id = v_account_id and d.type <> 3;
        v_balance := (v_account ->> 'balance')::numeric;
        v_offset := round(v_balance - v_deal_sum, 2);
        v_baseline := coalesce(v_expected, v_old.ledger_offset);
        v_drift := round(v_offset - coalesce(v_baseline, v_offset), 2);
        if v_n_open is not null then
            -- Open positions do not move the balance; their floating P/L and swap are equity.
            select coalesce(sum(x.profit + x.swap), 0)
              into v_floating
              from unnest(mt5_col_numeric(v_open_positions, 'profit', v_n_open_rows),
                          mt5_col_numeric(v_open_positions, 'swap', v_n_open_rows))
                   as x(profit, swap);
            v_equity_drift := round((v_account ->> 'equity')::numeric
                                    - (v_balance + coalesce((v_account ->> 'credit')::numeric, 0)
                                       + v_floating), 2);
        end if;
        if abs(v_drift) > 0.01 then
            v_ledger_status := 'gap';
            v_ledger_message := format(
                'ledger_gap: balance %s minus the stored deals (%s) gives opening offset %s, '
                'expected %s (drift %s %s); the cursor stays and the next sync re-reads history',
                v_balance, round(v_deal_sum, 2), v_offset, v_baseline, v_drift,
                coalesce(v_account ->> 'currency', ''));
            v_cursor := null;
        elsif abs(coalesce(v_equity_drift, 0)) > 0.01 then
            v_ledger_status := 'equity_drift';
            v_ledger_message := format(
                'equity_drift: equity %s differs from balance %s + credit %s + open P/L and swap '
                '%s by %s', v_account ->> 'equity', v_balance,
                coalesce(v_account ->> 'credit', '0'), v_floating, v_equity_drift);
        elsif v_baseline is null then
            v_ledger_status := 'baseline';  -- first check of a window that starts later
        else
            v_ledger_status := 'ok';
        end if;
        if v_ledger_message is not null then
            v_status := 'partial';
            v_error_code := coalesce(v_error_code, split_part(v_ledger_message, ':', 1));
            v_error_message := concat_ws('; ', v_ledger_message, v_error_message);
        end if;
    end if;

    -- ------------------------------------------------ (a, g, h, j) the account row
    v_stage := 'trading_accounts';
    v_new := v_old;
    if v_account is not null then
        select x.balance, x.equity, x.margin, x.free_margin, x.margin_level, x.currency,
               x.leverage, x.margin_mode, coalesce(v_old.broker_name, nullif(x.company, ''))
          into v_new.balance, v_new.equity, v_new.margin, v_new.free_margin, v_new.margin_level,
               v_new.currency, v_new.leverage, v_new.margin_mode, v_new.broker_name
          from jsonb_to_record(v_account) as x(
               balance numeric(28, 8), equity numeric(28, 8), margin numeric(28, 8),
               free_margin numeric(28, 8), margin_level numeric(28, 8), currency text,
               leverage integer, margin_mode text, company text);
    end if;
    if v_cursor is not null and (v_old.history_cursor is null or v_cursor > v_old.history_cursor) then
        v_new.history_cursor := v_cursor;
    end if;
    v_new.last_sync_at := greatest(v_old.last_sync_at, v_completed);
    if v_ledger_status is not null then
        v_new.ledger_offset := coalesce(v_baseline, v_offset);
        v_new.ledger_status := v_ledger_status;
        v_new.ledger_checked_at := v_completed;
        v_new.ledger_drift := v_drift;
        v_new.ledger_equity_drift := v_equity_drift;
        if v_ledger_status = 'gap' then
            v_new.ledger_gap_since := coalesce(v_old.ledger_gap_since, v_completed);
        elsif v_old.ledger_status = 'gap' then
            v_new.ledger_gap_since := null;
            v_new.ledger_healed_at := v_completed;
            v_new.ledger_heal_note := format(
                'gap since %s (drift %s) closed by %s sync %s', v_old.ledger_gap_since,
                v_old.ledger_drift, v_sync_type, v_sync_id);
        end if;
    end if;
    if v_status = 'success' then
        v_new.last_successful_sync_at := greatest(v_old.last_successful_sync_at, v_completed);
        v_new.sync_failure_count := 0;
        v_new.last_connection_error := null;
    else
        v_new.last_connection_error := v_error_message;
    end if;
    if v_new is distinct from v_old then
        v_new.updated_at := v_completed;
    end if;
    -- The lease is bookkeeping: releasing it does not count as a change of the account.
    if v_lease_holder is not null and v_old.sync_lease_holder = v_lease_holder then
        v_new.sync_lease_holder := null;
        v_new.sync_lease_until := null;
    end if;
    if v_new is distinct from v_old then
        update public.trading_accounts
           set balance = v_new.balance,
               equity = v_new.equity,
               margin = v_new.margin,
               free_margin = v_new.free_margin,
               margin_level = v_new.margin_level,
               currency = v_new.currency,
               leverage = v_new.leverage,
               margin_mode = v_new.margin_mode,
               broker_name = v_new.broker_name,
               history_cursor = v_new.history_cursor,
               last_sync_at = v_new.last_sync_at,
               last_successful_sync_at = v_new.last_successful_sync_at,
               sync_failure_count = v_new.sync_failure_count,
               last_connection_error = v_new.last_connection_error,
               sync_lease_holder = v_new.sync_lease_holder,
               sync_lease_until = v_new.sync_lease_until,
               ledger_offset = v_new.ledger_offset,
               ledger_status = v_new.ledger_status,
               ledger_checked_at = v_new.ledger_checked_at,
               ledger_drift = v_new.ledger_drift,
               ledger_equity_drift = v_new.ledger_equity_drift,
               ledger_gap_since = v_new.ledger_gap_since,
               ledger_healed_at = v_new.ledger_healed_at,
               ledger_heal_note = v_new.ledger_heal_note,
               updated_at = v_new.updated_at
         where id = v_account_id;
    end if;

    -- ------------------------------------------------ (i) the log row
    v_stage := 'sync_logs';
    insert into public.sync_logs as l
        (sync_id, account_id, execution_id, flow_run_id, trigger, sync_type, status, started_at,
         completed_at, duration_ms, trades_synced, deals_synced, error_code, error_message,
         details, created_at)
    values
        (v_sync_id, v_account_id, v_execution_id, v_flow_run_id, v_trigger, v_sync_type,
         v_status, v_started, v_completed, v_duration_ms, v_n_closed + coalesce(v_n_open, 0),
         v_n_deals, v_error_code, v_error_message,
         jsonb_build_object(
             'closed_trades', v_n_closed,
             'open_positions', v_n_open,
             'deals', v_n_deals,
             'cash_flows', v_n_cash,
             'quarantined', v_n_quarantine,
             'account_updated', v_account is not null,
             'snapshot_taken_at', v_snapshot ->> 'taken_at',
             'history_cursor', v_cursor,
             'ledger', case when v_ledger_status is null then null else jsonb_build_object(
                 'status', v_ledger_status, 'balance', v_balance, 'deal_sum', v_deal_sum,
                 'offset', v_offset, 'expected', v_baseline, 'drift', v_drift,
                 'equity_drift', v_equity_drift) end),
         v_started)
    on conflict (sync_id) do update
       set account_id = excluded.account_id,
           execution_id = excluded.execution_id,
           flow_run_id = excluded.flow_run_id,
           trigger = excluded.trigger,
           sync_type = excluded.sync_type,
           status = excluded.status,
           started_at = excluded.started_at,
           completed_at = excluded.completed_at,
           duration_ms = excluded.duration_ms,
           trades_synced = excluded.trades_synced,
           deals_synced = excluded.deals_synced,
           error_code = excluded.error_code,
           error_message = excluded.error_message,
           details = excluded.details
     where (l.account_id, l.execution_id, l.flow_run_id, l.trigger, l.sync_type, l.status,
            l.started_at, l.completed_at, l.duration_ms, l.trades_synced, l.deals_synced,
            l.error_code, l.error_message, l.details)
           is distinct from
           (excluded.account_id, excluded.execution_id, excluded.flow_run_id, excluded.trigger,
            excluded.sync_type, excluded.status, excluded.started_at, excluded.completed_at,
            excluded.duration_ms, excluded.trades_synced, excluded.deals_synced,
            excluded.error_code, excluded.error_message, excluded.details);

    return jsonb_build_object(
        'sync_id', v_sync_id,
        'status', v_status,
        'trades_synced', v_n_closed + coalesce(v_n_open, 0),
        'deals_synced', v_n_deals,
        'cash_flows_synced', v_n_cash,
        'quarantined', v_n_quarantine,
        'cursor', v_new.history_cursor,
        'error_code', v_error_code,
        'error_message', v_error_message,
        'ledger', case when v_ledger_status is null then null else jsonb_build_object(
            'status', v_ledger_status, 'offset', v_offset, 'expected', v_baseline,
            'drift', v_drift, 'equity_drift', v_equity_drift) end);
exception
    when others then
        get stacked diagnostics
            e_state = returned_sqlstate,
            e_message = message_text,
            e_detail = pg_exception_detail,
            e_hint = pg_exception_hint,
            e_constraint = constraint_name,
            e_table = table_name,
            e_column = column_name;
        if v_stage = 'payload' then
            raise;  -- validation errors already name the field
        end if;
        -- Name the part of the payload that failed; keep SQLSTATE and constraint so clients can
        -- still tell a check violation from a lost connection.
        raise exception '%: writing % failed: %', fn, v_stage, e_message
            using errcode = e_state,
                  detail = coalesce(e_detail, ''),
                  hint = coalesce(e_hint, ''),
                  constraint = coalesce(e_constraint, ''),
                  table = coalesce(e_table, ''),
                  column = coalesce(e_column, '');
end
$$;

--
-- Name: mt5_commit_staged_account_sync(jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_commit_staged_account_sync(p jsonb) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    SET "TimeZone" TO 'UTC'
    AS $$
declare
    fn constant text := 'mt5_commit_staged_account_sync';
    v_sync_id uuid := public.mt5_payload_uuid(p, fn, 'sync_id');
    v_account_id uuid := public.mt5_payload_uuid(p, fn, 'account_id');
    v_staged jsonb := public.mt5_payload_object(p, fn, 'staged');
    v_full jsonb := p - 'staged';
    v_part text;
    v_spec jsonb;
    v_chunks integer;
    v_rows integer;
    v_found_chunks integer;
    v_found_rows integer;
    v_missing text;
    v_status text;
    v_result jsonb;
begin
    if v_staged is null then
        raise exception '%: payload field "staged" is required (a JSON object)', fn
            using errcode = 'invalid_parameter_value';
    end if;
    -- Same lock as the commit takes first: the replay check below cannot race a commit.
    perform 1 from public.trading_accounts where id = v_account_id for update;
    if not found then
        raise exception '%: unknown account_id %', fn, v_account_id
            using errcode = 'foreign_key_violation';
    end if;

    for v_part, v_spec in select key, value from jsonb_each(v_staged) loop
        if v_part not in ('deals', 'cash_flows', 'closed_trades', 'open_positions', 'quarantine') then
            raise exception '%: cannot stage part "%"', fn, v_part
                using errcode = 'invalid_parameter_value';
        end if;
        begin
            v_chunks := (v_spec ->> 'chunks')::integer;
            v_rows := (v_spec ->> 'rows')::integer;
        exception when invalid_text_representation or numeric_value_out_of_range then
            v_chunks := null;
        end;
        if v_chunks is null or v_rows is null or v_chunks < 0 or v_rows < 0 then
            raise exception '%: staged.% must be {"chunks": n, "rows": m}', fn, v_part
                using errcode = 'invalid_parameter_value';
        end if;
        select count(*), coalesce(sum(c.row_count), 0)
          into v_found_chunks, v_found_rows
          from public.sync_commit_chunks c
         where c.sync_id = v_sync_id and c.part = v_part and c.seq < v_chunks
           and c.account_id = v_account_id;
        if v_found_chunks <> v_chunks or v_found_rows <> v_rows then
            v_missing := format('%s: %s of %s chunks, %s of %s rows',
                                v_part, v_found_chunks, v_chunks, v_found_rows, v_rows);
            exit;
        end if;
        v_full := jsonb_set(
            v_full, array[v_part],
            (case when jsonb_typeof(v_full -> v_part) = 'array' then v_full -> v_part
                  else '[]'::jsonb end)
            || coalesce((select jsonb_agg(e.j order by c.seq, e.ord)
                           from public.sync_commit_chunks c
                          cross join lateral jsonb_array_elements(c.rows)
                                with ordinality as e(j, ord)
                          where c.sync_id = v_sync_id and c.part = v_part and c.seq < v_chunks),
                        '[]'::jsonb));
    end loop;

    if v_missing is not null then
        select l.status into v_status
          from public.sync_logs l
         where l.sync_id = v_sync_id and l.account_id = v_account_id;
        if v_status in ('success', 'partial') then
            delete from public.sync_commit_chunks where sync_id = v_sync_id;
            select jsonb_build_object(
                       'sync_id', l.sync_id,
                       'status', l.status,
                       'trades_synced', l.trades_synced,
                       'deals_synced', l.deals_synced,
                       'cash_flows_synced', coalesce((l.details ->> 'cash_flows')::integer, 0),
                       'quarantined', coalesce((l.details ->> 'quarantined')::integer, 0),
                       'cursor', a.history_cursor,
                       'error_code', l.error_code,
                       'error_message', l.error_message,
                       'ledger', l.details -> 'ledger')
              into v_result
              from public.sync_logs l
              join public.trading_accounts a on a.id = l.account_id
             where l.sync_id = v_sync_id;
            return v_result;
        end if;
        raise exception '%: staged chunks of sync % are incomplete (%); stage them again',
            fn, v_sync_id, v_missing
            using errcode = 'object_not_in_prerequisite_state';
    end if;

    v_result := public.mt5_commit_account_sync(v_full);
    delete from public.sync_commit_chunks where sync_id = v_sync_id;
    delete from public.sync_commit_chunks
     where account_id = v_account_id and created_at < now() - interval '1 day';
    return v_result;
end
$$;

--
-- Name: mt5_connect_account(uuid, bigint, text, text, text, uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_connect_account(p_user_id uuid, p_login_number bigint, p_broker_server text, p_password_encrypted text, p_server_time_rule text, p_sync_id uuid) RETURNS TABLE(outcome text, account_id uuid, account_label text)
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    SET "TimeZone" TO 'UTC'
    AS $$
declare
    v_now timestamptz := now();
    v_id uuid;
    v_created boolean;
begin
    if p_user_id is null or p_sync_id is null or p_login_number is null
       or coalesce(p_broker_server, '') = '' or coalesce(p_password_encrypted, '') = '' then
        raise exception 'mt5_connect_account: user, login, server, password and sync id are required'
            using errcode = 'invalid_parameter_value';
    end if;

    insert into public.trading_accounts as a
        (user_id, login_number, broker_server, investor_password_encrypted, server_time_rule,
         is_active)
    values (p_user_id, p_login_number, p_broker_server, p_password_encrypted,
            coalesce(p_server_time_rule, 'ny+7'), true)
    on conflict (broker_server, login_number, user_id) do update
       set investor_password_encrypted = excluded.investor_password_encrypted,
           server_time_rule = excluded.server_time_rule,
           is_active = true,
           sync_failure_count = 0,
           last_connection_error = null,
           updated_at = v_now
     where not a.is_active
    returning a.id, (a.xmax = 0) into v_id, v_created;

    if v_id is null then
        return query select 'duplicate'::text, null::uuid, null::text;
        return;
    end if;

    insert into public.sync_logs
        (sync_id, account_id, trigger, sync_type, status, started_at, created_at, details)
    values
        (p_sync_id, v_id, 'manual', 'verify', 'processing', v_now, v_now,
         jsonb_build_object('requested_by', p_user_id, 'reason',
                            case when v_created then 'connect' else 'reconnect' end));

    return query select case when v_created then 'created' else 'reactivated' end,
                        v_id, p_login_number::text || '@' || p_broker_server;
end
$$;

--
-- Name: mt5_credentials_changed(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_credentials_changed() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    AS $$
begin
    update public.mt5_account_health
       set state = 'credentials_changed', next_attempt_at = null
     where account_id = new.id and state = 'needs_credentials';
    return null;
end
$$;

--
-- Name: mt5_cycle_report(uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_cycle_report(p_execution_id uuid) RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path TO 'public', 'pg_temp'
    SET "TimeZone" TO 'UTC'
    AS $$
    select jsonb_build_object(
        'shards', coalesce((
            select jsonb_agg(jsonb_build_object(
                       'host', s.host, 'flow_run_id', s.flow_run_id, 'started_at', s.started_at,
                       'finished_at', s.finished_at, 'summary', s.summary) order by s.host)
              from public.sync_cycle_shards as s where s.execution_id = p_execution_id), '[]'),
        'claims', coalesce((
            select jsonb_agg(jsonb_build_object(
                       'account_id', c.account_id, 'host', c.host, 'outcome', c.outcome,
                       'claims', c.claims, 'claimed_at', c.claimed_at))
              from public.sync_cycle_claims as c where c.execution_id = p_execution_id), '[]'),
        'logs', coalesce((
            select jsonb_agg(jsonb_build_object(
                       'sync_id', l.sync_id, 'account_id', l.account_id, 'status', l.status,
                       'sync_type', l.sync_type, 'started_at', l.started_at,
                       'completed_at', l.completed_at, 'duration_ms', l.duration_ms,
                       'trades_synced', l.trades_synced, 'deals_synced', l.deals_synced,
                       'error_code', l.error_code, 'error_message', l.error_message))
              from public.sync_logs as l where l.execution_id = p_execution_id), '[]'));
$$;

--
-- Name: mt5_deactivate_account(uuid, uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_deactivate_account(p_account_id uuid, p_user_id uuid) RETURNS boolean
    LANGUAGE sql
    SET search_path TO 'public', 'pg_temp'
    AS $$
    with changed as (
        update public.trading_accounts as a
           set is_active = false, updated_at = now()
         where a.id = p_account_id and a.user_id = p_user_id and a.is_active
        returning 1
    )
    select exists (select 1 from changed);
$$;

--
-- Name: mt5_failure_kind(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_failure_kind(p_error_code text) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
    select case
        when p_error_code in ('auth_failed', 'auth_otp_required') then 'credentials'
        when p_error_code in ('terminal_timeout', 'terminal_unavailable', 'ipc_timeout',
                              'ipc_error', 'no_result', 'account_mismatch', 'terminal_error')
            then 'transient'
        else 'other'
    end;
$$;

--
-- Name: mt5_finish_verify_sync(jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_finish_verify_sync(p jsonb) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    SET "TimeZone" TO 'UTC'
    AS $$
declare
    v_status text := p ->> 'status';
    v_account_id uuid;
    v_info jsonb := coalesce(p -> 'details' -> 'account_info', '{}'::jsonb);
begin
    if v_status is null or v_status not in ('success', 'failed') then
        raise exception 'mt5_finish_verify_sync: status must be success or failed, got %', v_status
            using errcode = 'invalid_parameter_value';
    end if;
    update public.sync_logs as l
       set status = v_status,
           completed_at = coalesce((p ->> 'completed_at')::timestamptz, now()),
           error_code = p ->> 'error_code',
           error_message = p ->> 'error_message',
           flow_run_id = coalesce((p ->> 'flow_run_id')::uuid, l.flow_run_id),
           details = coalesce(l.details, '{}'::jsonb) || coalesce(p -> 'details', '{}'::jsonb)
                     || jsonb_build_object('duration_ms', (p ->> 'duration_ms')::integer)
     where l.sync_id = (p ->> 'sync_id')::uuid
       and l.sync_type = 'verify'
       and l.status = 'processing'
    returning l.account_id into v_account_id;
    if not found then
        return false;
    end if;
    if v_status = 'success' then
        update public.trading_accounts as a
           set broker_name = coalesce(v_info ->> 'company', a.broker_name),
               currency = coalesce(v_info ->> 'currency', a.currency),
               leverage = coalesce((v_info ->> 'leverage')::integer, a.leverage),
               last_connection_error = null,
               updated_at = now()
         where a.id = v_account_id;
    else
        update public.trading_accounts as a
           set last_connection_error = p ->> 'error_message', updated_at = now()
         where a.id = v_account_id;
    end if;
    return true;
end
$$;

--
-- Name: mt5_mark_sync_started(jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_mark_sync_started(p jsonb) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    SET "TimeZone" TO 'UTC'
    AS $$
declare
    fn constant text := 'mt5_mark_sync_started';
    v_sync_id uuid := public.mt5_payload_uuid(p, fn, 'sync_id');
    v_account_id uuid := public.mt5_payload_uuid(p, fn, 'account_id');
    v_execution_id uuid := public.mt5_payload_uuid(p, fn, 'execution_id', false);
    v_flow_run_id uuid := public.mt5_payload_uuid(p, fn, 'flow_run_id', false);
    v_lease_holder uuid := public.mt5_payload_uuid(p, fn, 'lease_holder', false);
    v_trigger text := public.mt5_payload_choice(p, fn, 'trigger', array['scheduled', 'manual', 'backfill']);
    v_sync_type text := public.mt5_payload_choice(p, fn, 'sync_type', array['full', 'incremental']);
    v_started timestamptz := public.mt5_payload_timestamptz(p, fn, 'started_at');
begin
    if not exists (select 1 from public.trading_accounts where id = v_account_id) then
        raise exception '%: unknown account_id %', fn, v_account_id
            using errcode = 'foreign_key_violation';
    end if;

    if v_lease_holder is not null then
        update public.trading_accounts
           set sync_lease_flow_run_id = v_flow_run_id
         where id = v_account_id and sync_lease_holder = v_lease_holder
           and sync_lease_flow_run_id is distinct from v_flow_run_id;
        update public.sync_logs as l
           set status = 'failed',
               completed_at = greatest(l.started_at, v_started),
               duration_ms = greatest(0, round(extract(epoch from (v_started - l.started_at)) * 1000))::integer,
               error_code = 'abandoned',
               error_message = 'this sync stopped without reporting an outcome (its host or '
                   || 'process died; its lease lapsed); closed when the account was next claimed',
               details = coalesce(l.details, '{}'::jsonb)
                   || jsonb_build_object('abandoned_for', v_sync_id)
         where l.account_id = v_account_id
           and l.status = 'processing'
           and l.sync_id <> v_sync_id
           and l.lease_holder is not null
           and l.lease_holder <> v_lease_holder;
    end if;

    insert into public.sync_logs as l
        (sync_id, account_id, execution_id, flow_run_id, trigger, sync_type, status,
         started_at, created_at, lease_holder)
    values
        (v_sync_id, v_account_id, v_execution_id, v_flow_run_id, v_trigger, v_sync_type,
         'processing', v_started, v_started, v_lease_holder)
    on conflict (sync_id) do update
       set account_id = excluded.account_id,
           execution_id = excluded.execution_id,
           flow_run_id = excluded.flow_run_id,
           trigger = excluded.trigger,
           sync_type = excluded.sync_type,
           started_at = excluded.started_at,
           lease_holder = coalesce(excluded.lease_holder, l.lease_holder)
     where l.status = 'processing'
       and (l.account_id, l.execution_id, l.flow_run_id, l.trigger, l.sync_type, l.started_at,
            l.lease_holder)
           is distinct from
           (excluded.account_id, excluded.execution_id, excluded.flow_run_id, excluded.trigger,
            excluded.sync_type, excluded.started_at, coalesce(excluded.lease_holder, l.lease_holder));
end
$$;

--
-- Name: mt5_open_sync_cycle(uuid, text, text, uuid[], uuid[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_open_sync_cycle(p_execution_id uuid, p_trigger text, p_sync_type text, p_account_ids uuid[], p_excluded_ids uuid[] DEFAULT NULL::uuid[]) RETURNS void
    LANGUAGE sql
    SET search_path TO 'public', 'pg_temp'
    AS $$
    -- A retried parent reopens its own cycle: idempotent.
    insert into public.sync_cycles (execution_id, trigger, sync_type, account_ids, excluded_ids)
    values (p_execution_id, p_trigger, p_sync_type, p_account_ids, p_excluded_ids)
    on conflict (execution_id) do nothing;
$$;

--
-- Name: mt5_pause_failing_servers(jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_pause_failing_servers(p jsonb) RETURNS TABLE(broker_server text, error_code text, accounts_failed integer, accounts_tried integer, paused_until timestamp with time zone)
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    SET "TimeZone" TO 'UTC'
    AS $$
declare
    fn constant text := 'mt5_pause_failing_servers';
    v_execution_id uuid := public.mt5_payload_uuid(p, fn, 'execution_id');
    v_now timestamptz := public.mt5_payload_timestamptz(p, fn, 'now');
    v_min integer := coalesce(public.mt5_payload_text(p, fn, 'min_accounts', false)::integer, 3);
    v_ratio double precision := coalesce(public.mt5_payload_text(p, fn, 'ratio', false)::double precision, 0.8);
    v_pause interval := make_interval(secs => coalesce(
        public.mt5_payload_text(p, fn, 'pause_s', false)::double precision, 600));
begin
    return query
    with tried as (
        select a.broker_server as server, l.status, l.error_code
          from public.sync_logs l
          join public.trading_accounts a on a.id = l.account_id
         where l.execution_id = v_execution_id
           and l.status in ('success', 'partial', 'failed')
    ), worst as (
        select t.server, t.error_code, count(*)::integer as n
          from tried t
         where t.status = 'failed' and public.mt5_failure_kind(t.error_code) = 'transient'
         group by 1, 2
    ), candidates as (
        select distinct on (w.server) w.server, w.error_code, w.n,
               (select count(*)::integer from tried t where t.server = w.server) as total
          from worst w
         order by w.server, w.n desc, w.error_code
    ), upserted as (
        insert into public.mt5_server_pauses as sp
            (broker_server, paused_at, paused_until, error_code, accounts_failed,
             accounts_tried, execution_id)
        select c.server, v_now, v_now + v_pause, c.error_code, c.n, c.total, v_execution_id
          from candidates c
         where c.total >= v_min and c.n >= v_ratio * c.total
        on conflict on constraint mt5_server_pauses_pkey do update
           set paused_until = excluded.paused_until, error_code = excluded.error_code,
               accounts_failed = excluded.accounts_failed,
               accounts_tried = excluded.accounts_tried, execution_id = excluded.execution_id,
               paused_at = case when sp.paused_until > excluded.paused_at then sp.paused_at
                                else excluded.paused_at end
        returning sp.broker_server, sp.error_code, sp.accounts_failed, sp.accounts_tried,
                  sp.paused_until
    )
    -- announced only if the server was not paused already (the CTE below reads the table as
    -- it was before this statement)
    select u.broker_server, u.error_code, u.accounts_failed, u.accounts_tried, u.paused_until
      from upserted u
     where not exists (select 1 from public.mt5_server_pauses o
                        where o.broker_server = u.broker_server and o.paused_until > v_now);
end
$$;

--
-- Name: mt5_payload_array_length(jsonb, text, text, boolean); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_payload_array_length(p jsonb, fn text, key text, nullable boolean DEFAULT false) RETURNS integer
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
begin
    if not (p ? key) or jsonb_typeof(p -> key) = 'null' then
        if nullable then
            return null;
        end if;
        raise exception '%: payload field "%" is required (a JSON array)', fn, key
            using errcode = 'invalid_parameter_value';
    end if;
    if jsonb_typeof(p -> key) <> 'array' then
        raise exception '%: payload field "%" must be a JSON array, got %', fn, key, jsonb_typeof(p -> key)
            using errcode = 'invalid_parameter_value';
    end if;
    if exists (select 1 from jsonb_array_elements(p -> key) e where jsonb_typeof(e) <> 'object') then
        raise exception '%: every element of payload field "%" must be a JSON object', fn, key
            using errcode = 'invalid_parameter_value';
    end if;
    return jsonb_array_length(p -> key);
end
$$;

--
-- Name: mt5_payload_choice(jsonb, text, text, text[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_payload_choice(p jsonb, fn text, key text, allowed text[]) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
    v text := public.mt5_payload_text(p, fn, key, true);
begin
    if not (v = any (allowed)) then
        raise exception '%: payload field "%" must be one of %, got "%"', fn, key, allowed, left(v, 80)
            using errcode = 'invalid_parameter_value';
    end if;
    return v;
end
$$;

--
-- Name: mt5_payload_columns(jsonb, text, text, text[], boolean); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_payload_columns(p jsonb, fn text, key text, cols text[], nullable boolean DEFAULT false) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
declare
    v jsonb := p -> key;
    v_cols jsonb;
    v_rows integer;
    v_bad text;
begin
    if v is null or jsonb_typeof(v) = 'null' then
        if nullable then
            return null;
        end if;
        raise exception '%: payload field "%" is required (a JSON array)', fn, key
            using errcode = 'invalid_parameter_value';
    end if;
    if jsonb_typeof(v) = 'array' then
        if exists (select 1 from jsonb_array_elements(v) e where jsonb_typeof(e) <> 'object') then
            raise exception '%: every element of payload field "%" must be a JSON object', fn, key
                using errcode = 'invalid_parameter_value';
        end if;
        if jsonb_array_length(v) = 0 then
            return '{"rows": 0, "columns": {}}'::jsonb;
        end if;
        return jsonb_build_object(
            'rows', jsonb_array_length(v),
            'columns', (select jsonb_object_agg(k, (select jsonb_agg(e.j -> k order by e.o)
                                                      from jsonb_array_elements(v)
                                                           with ordinality as e(j, o)))
                          from unnest(cols) as k));
    else
        v_cols := v -> 'columns';
        if jsonb_typeof(v) <> 'object' or jsonb_typeof(v_cols) is distinct from 'object'
           or jsonb_typeof(v -> 'rows') is distinct from 'number'
           or (select count(*) from jsonb_object_keys(v)) <> 2 then
            raise exception '%: payload field "%" must be a JSON array of rows or {"rows": n, "columns": {...}}, got %',
                fn, key, jsonb_typeof(v)
                using errcode = 'invalid_parameter_value';
        end if;
        begin
            v_rows := (v ->> 'rows')::integer;
        exception when invalid_text_representation or numeric_value_out_of_range then
            v_rows := -1;
        end;
        if v_rows < 0 then
            raise exception '%: payload field "%.rows" must be a non-negative integer', fn, key
                using errcode = 'invalid_parameter_value';
        end if;
        select c.key into v_bad from jsonb_each(v_cols) c
         where jsonb_typeof(c.value) not in ('array', 'string') limit 1;
        if v_bad is not null then
            raise exception '%: column "%" of payload field "%" must be a JSON array or an array literal',
                fn, v_bad, key
                using errcode = 'invalid_parameter_value';
        end if;
        -- Each column's length is checked against "rows" as it is cast (mt5_col_check).
        return v;
    end if;
end
$$;

--
-- Name: mt5_payload_object(jsonb, text, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_payload_object(p jsonb, fn text, key text) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
begin
    if not (p ? key) or jsonb_typeof(p -> key) = 'null' then
        return null;
    end if;
    if jsonb_typeof(p -> key) <> 'object' then
        raise exception '%: payload field "%" must be a JSON object or null, got %', fn, key, jsonb_typeof(p -> key)
            using errcode = 'invalid_parameter_value';
    end if;
    return p -> key;
end
$$;

--
-- Name: mt5_payload_text(jsonb, text, text, boolean); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_payload_text(p jsonb, fn text, key text, required boolean DEFAULT true) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
begin
    if p is null or jsonb_typeof(p) <> 'object' then
        raise exception '%: payload must be a JSON object', fn
            using errcode = 'invalid_parameter_value';
    end if;
    if not (p ? key) or jsonb_typeof(p -> key) = 'null' then
        if required then
            raise exception '%: payload field "%" is required', fn, key
                using errcode = 'invalid_parameter_value';
        end if;
        return null;
    end if;
    if jsonb_typeof(p -> key) not in ('string', 'number') then
        raise exception '%: payload field "%" must be a string, got %', fn, key, jsonb_typeof(p -> key)
            using errcode = 'invalid_parameter_value';
    end if;
    return p ->> key;
end
$$;

--
-- Name: mt5_payload_timestamptz(jsonb, text, text, boolean); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_payload_timestamptz(p jsonb, fn text, key text, required boolean DEFAULT true) RETURNS timestamp with time zone
    LANGUAGE plpgsql STABLE
    SET search_path TO 'public', 'pg_temp'
    SET "TimeZone" TO 'UTC'
    AS $_$
declare
    v text := public.mt5_payload_text(p, fn, key, required);
begin
    if v is null then
        return null;
    end if;
    if v !~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|z|[+-]\d{2}(:?\d{2})?)$' then
        raise exception '%: payload field "%" must be an ISO 8601 timestamp with offset, got "%"',
            fn, key, left(v, 80)
            using errcode = 'invalid_parameter_value';
    end if;
    return v::timestamptz;
exception
    when datetime_field_overflow or invalid_datetime_format then
        raise exception '%: payload field "%" is not a valid timestamp: "%"', fn, key, left(v, 80)
            using errcode = 'invalid_parameter_value';
end
$_$;

--
-- Name: mt5_payload_uuid(jsonb, text, text, boolean); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_payload_uuid(p jsonb, fn text, key text, required boolean DEFAULT true) RETURNS uuid
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'public', 'pg_temp'
    AS $_$
declare
    v text := public.mt5_payload_text(p, fn, key, required);
begin
    if v is null then
        return null;
    end if;
    if v !~* '^\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?$' then
        raise exception '%: payload field "%" must be a UUID, got "%"', fn, key, left(v, 80)
            using errcode = 'invalid_parameter_value';
    end if;
    return v::uuid;
end
$_$;

--
-- Name: mt5_record_cycle_shard(uuid, text, uuid, jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_record_cycle_shard(p_execution_id uuid, p_host text, p_flow_run_id uuid, p_summary jsonb) RETURNS void
    LANGUAGE sql
    SET search_path TO 'public', 'pg_temp'
    AS $$
    insert into public.sync_cycle_shards as s
        (execution_id, host, flow_run_id, finished_at, summary)
    values (p_execution_id, p_host, p_flow_run_id,
            case when p_summary is null then null else now() end, p_summary)
    on conflict on constraint sync_cycle_shards_pkey do update
       set flow_run_id = coalesce(excluded.flow_run_id, s.flow_run_id),
           finished_at = excluded.finished_at,
           summary = excluded.summary;
$$;

--
-- Name: mt5_record_sync_failure(jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_record_sync_failure(p jsonb) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    SET "TimeZone" TO 'UTC'
    AS $$
declare
    fn constant text := 'mt5_record_sync_failure';
    v_sync_id uuid := public.mt5_payload_uuid(p, fn, 'sync_id');
    v_account_id uuid := public.mt5_payload_uuid(p, fn, 'account_id');
    v_execution_id uuid := public.mt5_payload_uuid(p, fn, 'execution_id', false);
    v_flow_run_id uuid := public.mt5_payload_uuid(p, fn, 'flow_run_id', false);
    v_trigger text := public.mt5_payload_choice(p, fn, 'trigger', array['scheduled', 'manual', 'backfill']);
    v_sync_type text := public.mt5_payload_choice(p, fn, 'sync_type', array['full', 'incremental']);
    v_error_code text := public.mt5_payload_text(p, fn, 'error_code');
    v_error_message text := public.mt5_payload_text(p, fn, 'error_message');
    v_started timestamptz := public.mt5_payload_timestamptz(p, fn, 'started_at');
    v_completed timestamptz := public.mt5_payload_timestamptz(p, fn, 'completed_at');
    v_lease_holder uuid := public.mt5_payload_uuid(p, fn, 'lease_holder', false);
    v_duration_ms integer;
    v_existing text;
begin
    begin
        v_duration_ms := public.mt5_payload_text(p, fn, 'duration_ms', false)::integer;
    exception when invalid_text_representation or numeric_value_out_of_range then
        raise exception '%: payload field "duration_ms" must be an integer', fn
            using errcode = 'invalid_parameter_value';
    end;

    perform 1 from public.trading_accounts where id = v_account_id for update;
    if not found then
        raise exception '%: unknown account_id %', fn, v_account_id
            using errcode = 'foreign_key_violation';
    end if;

    if v_lease_holder is not null then
        perform public.mt5_release_sync_lease(v_account_id, v_lease_holder);
    end if;

    select status into v_existing from public.sync_logs where sync_id = v_sync_id;
    if v_existing in ('failed', 'success', 'partial') then
        return;
    end if;

    update public.trading_accounts
       set sync_failure_count = sync_failure_count + 1,
           last_connection_error = v_error_message,
           last_sync_at = greatest(last_sync_at, v_completed),
           updated_at = v_completed
     where id = v_account_id;

    insert into public.sync_logs as l
        (sync_id, account_id, execution_id, flow_run_id, trigger, sync_type, status, started_at,
         completed_at, duration_ms, trades_synced, deals_synced, error_code, error_message,
         details, created_at)
    values
        (v_sync_id, v_account_id, v_execution_id, v_flow_run_id, v_trigger, v_sync_type,
         'failed', v_started, v_completed, v_duration_ms, 0, 0, v_error_code, v_error_message,
         null, v_started)
    on conflict (sync_id) do update
       set account_id = excluded.account_id,
           execution_id = excluded.execution_id,
           flow_run_id = excluded.flow_run_id,
           trigger = excluded.trigger,
           sync_type = excluded.sync_type,
           status = excluded.status,
           started_at = excluded.started_at,
           completed_at = excluded.completed_at,
           duration_ms = excluded.duration_ms,
           trades_synced = excluded.trades_synced,
           deals_synced = excluded.deals_synced,
           error_code = excluded.error_code,
           error_message = excluded.error_message,
           details = excluded.details;
end
$$;

--
-- Name: mt5_record_syncs_deferred(jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_record_syncs_deferred(p jsonb) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    SET "TimeZone" TO 'UTC'
    AS $$
declare
    fn constant text := 'mt5_record_syncs_deferred';
    v_execution_id uuid := public.mt5_payload_uuid(p, fn, 'execution_id', false);
    v_flow_run_id uuid := public.mt5_payload_uuid(p, fn, 'flow_run_id', false);
    v_trigger text := public.mt5_payload_choice(p, fn, 'trigger', array['scheduled', 'manual', 'backfill']);
    v_sync_type text := public.mt5_payload_choice(p, fn, 'sync_type', array['full', 'incremental']);
    v_at timestamptz := public.mt5_payload_timestamptz(p, fn, 'deferred_at');
    v_reason text := public.mt5_payload_text(p, fn, 'reason', false);
    v_n integer;
begin
    perform public.mt5_payload_array_length(p, fn, 'syncs');
    insert into public.sync_logs
        (sync_id, account_id, execution_id, flow_run_id, trigger, sync_type, status,
         started_at, completed_at, duration_ms, trades_synced, deals_synced, error_code,
         error_message, details, created_at)
    select x.sync_id, x.account_id, v_execution_id, v_flow_run_id, v_trigger, v_sync_type,
           'deferred', v_at, v_at, 0, 0, 0, 'deadline',
           coalesce(x.message, v_reason, 'deferred to the next cycle'),
           jsonb_build_object('estimate_ms', x.estimate_ms), v_at
      from jsonb_to_recordset(p -> 'syncs') as x(
           sync_id uuid, account_id uuid, estimate_ms integer, message text)
      join public.trading_accounts as a on a.id = x.account_id
     where x.sync_id is not null
    on conflict (sync_id) do nothing;
    get diagnostics v_n = row_count;
    return v_n;
end
$$;

--
-- Name: mt5_release_manual_sync(uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_release_manual_sync(p_sync_id uuid) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    SET "TimeZone" TO 'UTC'
    AS $$
declare
    v_account_id uuid;
    v_details jsonb;
    v_restored boolean := false;
begin
    delete from public.sync_logs as l
     where l.sync_id = p_sync_id and l.trigger = 'manual' and l.status = 'processing'
    returning l.account_id, l.details into v_account_id, v_details;
    if not found or v_details is null or not (v_details ? 'claimed_at') then
        return false;
    end if;

    update public.trading_accounts as a
       set last_manual_sync_at = (v_details ->> 'previous_manual_sync_at')::timestamptz
     where a.id = v_account_id
       and a.last_manual_sync_at = (v_details ->> 'claimed_at')::timestamptz
    returning true into v_restored;
    return coalesce(v_restored, false);
end
$$;

--
-- Name: mt5_release_sync_lease(uuid, uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_release_sync_lease(p_account_id uuid, p_holder uuid) RETURNS void
    LANGUAGE sql
    SET search_path TO 'public', 'pg_temp'
    AS $$
    update public.trading_accounts
       set sync_lease_holder = null,
           sync_lease_until = null,
           sync_lease_flow_run_id = null
     where id = p_account_id
       and sync_lease_holder = p_holder;
$$;

--
-- Name: mt5_renew_sync_leases(uuid[], integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_renew_sync_leases(p_holders uuid[], p_ttl_seconds integer) RETURNS SETOF uuid
    LANGUAGE sql
    SET search_path TO 'public', 'pg_temp'
    AS $$
    update public.trading_accounts
       set sync_lease_until = now() + make_interval(secs => p_ttl_seconds)
     where sync_lease_holder = any (p_holders)
       and p_ttl_seconds > 0
    returning sync_lease_holder;
$$;

--
-- Name: mt5_replace_account_credentials(uuid, uuid, text, uuid, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_replace_account_credentials(p_account_id uuid, p_user_id uuid, p_password_encrypted text, p_sync_id uuid, p_window_seconds integer) RETURNS TABLE(outcome text, account_label text, retry_after_seconds integer)
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    SET "TimeZone" TO 'UTC'
    AS $$
declare
    v_now timestamptz := now();
    v_label text;
    v_last timestamptz;
begin
    if p_account_id is null or p_user_id is null or p_sync_id is null
       or coalesce(p_password_encrypted, '') = '' then
        raise exception 'mt5_replace_account_credentials: account, user, password and sync id are required'
            using errcode = 'invalid_parameter_value';
    end if;
    if p_window_seconds is null or p_window_seconds <= 0 then
        raise exception 'mt5_replace_account_credentials: p_window_seconds must be positive, got %',
            p_window_seconds using errcode = 'invalid_parameter_value';
    end if;
    select a.login_number::text || '@' || a.broker_server into v_label
      from public.trading_accounts as a
     where a.id = p_account_id and a.user_id = p_user_id and a.is_active
       for update;
    if not found then
        return query select 'not_found'::text, null::text, null::integer;
        return;
    end if;
    -- A new statement: sees a verify committed by a request that held the lock before us.
    select max(l.created_at) into v_last
      from public.sync_logs as l
     where l.account_id = p_account_id and l.sync_type = 'verify'
       and l.error_code is distinct from 'orchestrator_unavailable';
    if v_last is not null and v_last > v_now - make_interval(secs => p_window_seconds) then
        return query select 'rate_limited'::text, v_label,
            least(p_window_seconds, greatest(1, ceil(extract(epoch from
                (v_last + make_interval(secs => p_window_seconds)) - v_now))::integer));
        return;
    end if;
    update public.trading_accounts as a
       set investor_password_encrypted = p_password_encrypted,
           sync_failure_count = 0,
           last_connection_error = null,
           updated_at = v_now
     where a.id = p_account_id;
    insert into public.sync_logs
        (sync_id, account_id, trigger, sync_type, status, started_at, created_at, details)
    values
        (p_sync_id, p_account_id, 'manual', 'verify', 'processing', v_now, v_now,
         jsonb_build_object('requested_by', p_user_id, 'reason', 'credentials'));
    return query select 'replaced'::text, v_label, null::integer;
end
$$;

--
-- Name: mt5_sync_duration_estimates(uuid[], integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_sync_duration_estimates(p_account_ids uuid[] DEFAULT NULL::uuid[], p_last integer DEFAULT 5) RETURNS TABLE(account_id uuid, median_ms integer, samples integer)
    LANGUAGE sql STABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
    select a.id,
           round(percentile_cont(0.5) within group (order by l.duration_ms))::integer,
           count(*)::integer
      from (select t.id from public.trading_accounts as t
             where (p_account_ids is null and t.is_active)
                or t.id = any (p_account_ids)) as a
     cross join lateral (
           select s.duration_ms
             from public.sync_logs as s
            where s.account_id = a.id
              and s.status in ('success', 'partial', 'failed')
              and s.duration_ms is not null
            order by s.started_at desc
            limit greatest(1, coalesce(p_last, 5))
     ) as l
     group by a.id;
$$;

--
-- Name: mt5_sync_lease_of(uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_sync_lease_of(p_account_id uuid) RETURNS TABLE(holder uuid, until timestamp with time zone, flow_run_id uuid, live boolean)
    LANGUAGE sql STABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
    select sync_lease_holder, sync_lease_until, sync_lease_flow_run_id,
           sync_lease_holder is not null and sync_lease_until >= now()
      from public.trading_accounts where id = p_account_id;
$$;

--
-- Name: mt5_take_health_events(integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_take_health_events(p_limit integer DEFAULT 100) RETURNS TABLE(id bigint, account_id uuid, login_number bigint, broker_server text, kind text, occurred_at timestamp with time zone, previous_state text, error_code text, message text, next_attempt_at timestamp with time zone, sync_id uuid)
    LANGUAGE sql
    SET search_path TO 'public', 'pg_temp'
    AS $$
    with taken as (
        delete from public.mt5_account_health_events e
         where e.id in (select x.id from public.mt5_account_health_events x
                         order by x.id limit greatest(1, p_limit) for update skip locked)
        returning e.*
    )
    select t.id, t.account_id, a.login_number, a.broker_server, t.kind, t.occurred_at,
           t.previous_state, t.error_code, t.message, t.next_attempt_at, t.sync_id
      from taken t
      join public.trading_accounts a on a.id = t.account_id
     order by t.id;
$$;

--
-- Name: mt5_track_account_health(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_track_account_health() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    SET "TimeZone" TO 'UTC'
    AS $$
declare
    v_old public.mt5_account_health;
    v_at timestamptz := coalesce(new.completed_at, new.started_at);
    v_kind text;
    v_n integer;
    v_delay interval;
    v_state text;
begin
    select * into v_old from public.mt5_account_health where account_id = new.account_id for update;
    if found and v_old.last_outcome_at > v_at then
        return null;  -- an older sync finishing late (a manual beside a scheduled one)
    end if;
    if new.status in ('success', 'partial') then
        insert into public.mt5_account_health as h
            (account_id, state, failure_kind, consecutive_failures, last_status, last_sync_id,
             last_error_code, last_error_message, last_outcome_at, failing_since, next_attempt_at)
        values (new.account_id, 'ok', null, 0, new.status, new.sync_id, new.error_code,
                new.error_message, v_at, null, null)
        on conflict (account_id) do update
           set state = 'ok', failure_kind = null, consecutive_failures = 0,
               last_status = excluded.last_status, last_sync_id = excluded.last_sync_id,
               last_error_code = excluded.last_error_code,
               last_error_message = excluded.last_error_message,
               last_outcome_at = excluded.last_outcome_at,
               failing_since = null, next_attempt_at = null;
        if v_old.state in ('needs_credentials', 'backing_off', 'credentials_changed') then
            insert into public.mt5_account_health_events
                (account_id, kind, occurred_at, previous_state, error_code, message, sync_id)
            values (new.account_id, 'recovered', v_at, v_old.state, v_old.last_error_code,
                    format('synced again after failing since %s (%s)',
                           v_old.failing_since, v_old.last_error_code),
                    new.sync_id);
        end if;
        return null;
    end if;

    -- failed
    v_kind := public.mt5_failure_kind(new.error_code);
    v_n := case when v_old.failure_kind = v_kind then v_old.consecutive_failures + 1 else 1 end;
    v_delay := public.mt5_backoff_delay(v_kind, v_n, new.account_id);
    v_state := case when v_kind = 'credentials' then 'needs_credentials'
                    when v_delay > interval '0' then 'backing_off'
                    else 'failing' end;
    insert into public.mt5_account_health as h
        (account_id, state, failure_kind, consecutive_failures, last_status, last_sync_id,
         last_error_code, last_error_message, last_outcome_at, failing_since, next_attempt_at)
    values (new.account_id, v_state, v_kind, v_n, new.status, new.sync_id, new.error_code,
            new.error_message, v_at, coalesce(v_old.failing_since, v_at),
            case when v_delay > interval '0' then v_at + v_delay end)
    on conflict (account_id) do update
       set state = excluded.state, failure_kind = excluded.failure_kind,
           consecutive_failures = excluded.consecutive_failures,
           last_status = excluded.last_status, last_sync_id = excluded.last_sync_id,
           last_error_code = excluded.last_error_code,
           last_error_message = excluded.last_error_message,
           last_outcome_at = excluded.last_outcome_at,
           failing_since = excluded.failing_since, next_attempt_at = excluded.next_attempt_at;
    if v_state = 'needs_credentials' and v_old.state is distinct from 'needs_credentials' then
        insert into public.mt5_account_health_events
            (account_id, kind, occurred_at, previous_state, error_code, message,
             next_attempt_at, sync_id)
        values (new.account_id, 'needs-credentials', v_at, v_old.state, new.error_code,
                new.error_message, v_at + v_delay, new.sync_id);
    end if;
    return null;
end
$$;

--
-- Name: mt5_trade_columns(jsonb, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_trade_columns(c jsonb, n integer) RETURNS TABLE(ticket bigint, symbol text, side text, status text, volume numeric, open_price numeric, open_time_utc timestamp with time zone, open_time_server bigint, close_price numeric, close_time_utc timestamp with time zone, close_time_server bigint, stop_loss numeric, take_profit numeric, current_price numeric, profit numeric, swap numeric, commission numeric, fee numeric, net_profit numeric, magic bigint, comment text, deal_count integer, ord bigint)
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'public', 'pg_temp'
    AS $$
begin
    return query select * from unnest(
                   mt5_col_bigint(c, 'ticket', n),
                   mt5_col_text(c, 'symbol', n),
                   mt5_col_text(c, 'side', n),
                   mt5_col_text(c, 'status', n),
                   mt5_col_numeric(c, 'volume', n),
                   mt5_col_numeric(c, 'open_price', n),
                   mt5_col_timestamptz(c, 'open_time_utc', n),
                   mt5_col_bigint(c, 'open_time_server', n),
                   mt5_col_numeric(c, 'close_price', n),
                   mt5_col_timestamptz(c, 'close_time_utc', n),
                   mt5_col_bigint(c, 'close_time_server', n),
                   mt5_col_numeric(c, 'stop_loss', n),
                   mt5_col_numeric(c, 'take_profit', n),
                   mt5_col_numeric(c, 'current_price', n),
                   mt5_col_numeric(c, 'profit', n),
                   mt5_col_numeric(c, 'swap', n),
                   mt5_col_numeric(c, 'commission', n),
                   mt5_col_numeric(c, 'fee', n),
                   mt5_col_numeric(c, 'net_profit', n),
                   mt5_col_bigint(c, 'magic', n),
                   mt5_col_text(c, 'comment', n),
                   mt5_col_int(c, 'deal_count', n))
                   with ordinality as u(
                   ticket, symbol, side, status, volume, open_price, open_time_utc,
                   open_time_server, close_price, close_time_utc, close_time_server, stop_loss,
                   take_profit, current_price, profit, swap, commission, fee, net_profit, magic,
                   comment, deal_count, ord);
end
$$;

--
-- Name: mt5_unclaim_cycle_accounts(uuid, uuid[], text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.mt5_unclaim_cycle_accounts(p_execution_id uuid, p_account_ids uuid[], p_outcome text) RETURNS void
    LANGUAGE sql
    SET search_path TO 'public', 'pg_temp'
    AS $$
    update public.trading_accounts as a
       set sync_lease_holder = null, sync_lease_until = null, sync_lease_flow_run_id = null
      from public.sync_cycle_claims as c
     where c.execution_id = p_execution_id and c.account_id = a.id
       and a.id = any (p_account_ids) and a.sync_lease_holder = c.lease_holder;
    update public.sync_cycle_claims
       set outcome = p_outcome
     where execution_id = p_execution_id and account_id = any (p_account_ids);
$$;

--
-- Name: account_snapshots; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.account_snapshots (
    account_id uuid NOT NULL,
    taken_at timestamp with time zone NOT NULL,
    balance numeric(28,8) NOT NULL,
    equity numeric(28,8) NOT NULL,
    margin numeric(28,8) NOT NULL,
    free_margin numeric(28,8) NOT NULL,
    margin_level numeric(28,8),
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: cash_flows; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.cash_flows (
    account_id uuid NOT NULL,
    deal_ticket bigint NOT NULL,
    type integer NOT NULL,
    kind text NOT NULL,
    amount numeric(28,8) NOT NULL,
    "time" timestamp with time zone NOT NULL,
    time_server bigint NOT NULL,
    comment text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: deals; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.deals (
    account_id uuid NOT NULL,
    ticket bigint NOT NULL,
    order_ticket bigint NOT NULL,
    position_id bigint NOT NULL,
    "time" timestamp with time zone NOT NULL,
    time_server bigint NOT NULL,
    time_msc_server bigint NOT NULL,
    type integer NOT NULL,
    entry integer NOT NULL,
    magic bigint NOT NULL,
    reason integer NOT NULL,
    volume numeric(28,8) NOT NULL,
    price numeric(28,8) NOT NULL,
    commission numeric(28,8) NOT NULL,
    swap numeric(28,8) NOT NULL,
    profit numeric(28,8) NOT NULL,
    fee numeric(28,8) NOT NULL,
    symbol text NOT NULL,
    comment text NOT NULL,
    external_id text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: mt5_account_freshness; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.mt5_account_freshness WITH (security_invoker='true') AS
 SELECT account_id,
    user_id,
    login_number,
    broker_name,
    broker_server,
    is_active,
    last_successful_sync_at,
    staleness_s,
    state,
    reason,
    next_attempt_at
   FROM public.mt5_account_freshness_at(now(), 900) mt5_account_freshness_at(account_id, user_id, login_number, broker_name, broker_server, is_active, last_successful_sync_at, staleness_s, state, reason, next_attempt_at);

--
-- Name: mt5_account_health; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.mt5_account_health (
    account_id uuid NOT NULL,
    state text NOT NULL,
    failure_kind text,
    consecutive_failures integer DEFAULT 0 NOT NULL,
    last_status text NOT NULL,
    last_sync_id uuid NOT NULL,
    last_error_code text,
    last_error_message text,
    last_outcome_at timestamp with time zone NOT NULL,
    failing_since timestamp with time zone,
    next_attempt_at timestamp with time zone,
    CONSTRAINT mt5_account_health_state_check CHECK ((state = ANY (ARRAY['ok'::text, 'failing'::text, 'backing_off'::text, 'needs_credentials'::text, 'credentials_changed'::text])))
);

--
-- Name: TABLE mt5_account_health; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.mt5_account_health IS 'Per account: the latest sync outcome and when the scheduled cycle may try it again (maintained by triggers on sync_logs and trading_accounts; see mt5_account_due).';

--
-- Name: mt5_account_health_events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.mt5_account_health_events (
    id bigint NOT NULL,
    account_id uuid NOT NULL,
    kind text NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    previous_state text,
    error_code text,
    message text,
    next_attempt_at timestamp with time zone,
    sync_id uuid,
    CONSTRAINT mt5_account_health_events_kind_check CHECK ((kind = ANY (ARRAY['needs-credentials'::text, 'recovered'::text])))
);

--
-- Name: mt5_account_health_events_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.mt5_account_health_events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.mt5_account_health_events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: mt5_account_schedule; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.mt5_account_schedule WITH (security_invoker='true') AS
 SELECT account_id,
    state,
    reason,
    message,
    next_attempt_at,
    due
   FROM public.mt5_account_schedule_at(now()) mt5_account_schedule_at(account_id, state, reason, message, next_attempt_at, due);

--
-- Name: sync_logs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.sync_logs (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    sync_id uuid NOT NULL,
    account_id uuid NOT NULL,
    execution_id uuid,
    flow_run_id uuid,
    trigger text NOT NULL,
    sync_type text NOT NULL,
    status text NOT NULL,
    started_at timestamp with time zone NOT NULL,
    completed_at timestamp with time zone,
    duration_ms integer,
    trades_synced integer DEFAULT 0 NOT NULL,
    deals_synced integer DEFAULT 0 NOT NULL,
    error_code text,
    error_message text,
    details jsonb,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    lease_holder uuid,
    CONSTRAINT sync_logs_status_check CHECK ((status = ANY (ARRAY['processing'::text, 'success'::text, 'partial'::text, 'failed'::text, 'deferred'::text, 'skipped'::text]))),
    CONSTRAINT sync_logs_sync_type_check CHECK ((sync_type = ANY (ARRAY['full'::text, 'incremental'::text, 'verify'::text]))),
    CONSTRAINT sync_logs_trigger_check CHECK ((trigger = ANY (ARRAY['scheduled'::text, 'manual'::text, 'backfill'::text])))
);

--
-- Name: COLUMN sync_logs.lease_holder; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.sync_logs.lease_holder IS 'The lease this sync held while it ran; null until it held one (a manual request not yet started). A processing row with a holder that is not the account''s live lease is abandoned.';

--
-- Name: trading_accounts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.trading_accounts (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    login_number bigint NOT NULL,
    broker_name text,
    broker_server text NOT NULL,
    investor_password_encrypted text NOT NULL,
    server_time_rule text DEFAULT 'ny+7'::text NOT NULL,
    is_active boolean DEFAULT true NOT NULL,
    currency text,
    leverage integer,
    margin_mode text,
    balance numeric(28,8),
    equity numeric(28,8),
    margin numeric(28,8),
    free_margin numeric(28,8),
    margin_level numeric(28,8),
    last_sync_at timestamp with time zone,
    last_successful_sync_at timestamp with time zone,
    sync_failure_count integer DEFAULT 0 NOT NULL,
    last_connection_error text,
    history_cursor timestamp with time zone,
    sync_lease_holder uuid,
    sync_lease_until timestamp with time zone,
    last_manual_sync_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    sync_lease_flow_run_id uuid,
    ledger_offset numeric(28,8),
    ledger_status text,
    ledger_checked_at timestamp with time zone,
    ledger_drift numeric(28,8),
    ledger_equity_drift numeric(28,8),
    ledger_gap_since timestamp with time zone,
    ledger_healed_at timestamp with time zone,
    ledger_heal_note text,
    CONSTRAINT trading_accounts_failure_count_check CHECK ((sync_failure_count >= 0)),
    CONSTRAINT trading_accounts_ledger_status_check CHECK ((ledger_status = ANY (ARRAY['baseline'::text, 'ok'::text, 'gap'::text, 'equity_drift'::text])))
);

--
-- Name: TABLE trading_accounts; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.trading_accounts IS 'MT5 accounts synced by mt5-sync; one row per (server, login, user).';

--
-- Name: COLUMN trading_accounts.sync_lease_flow_run_id; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.trading_accounts.sync_lease_flow_run_id IS 'Prefect flow run of the lease holder (set when its sync starts): lets a claimer ask Prefect whether the holder is still alive.';

--
-- Name: COLUMN trading_accounts.ledger_offset; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.trading_accounts.ledger_offset IS 'balance - sum(profit+swap+commission+fee) over the stored deals except credit: 0 when they reach the first deal; constant while the ledger is complete.';

--
-- Name: COLUMN trading_accounts.ledger_status; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.trading_accounts.ledger_status IS 'Last reconciliation: baseline (first check, offset recorded), ok, gap (deals missing or changed: the next sync re-reads all history), equity_drift.';

--
-- Name: mt5_accounts_with_failures; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.mt5_accounts_with_failures WITH (security_invoker='true') AS
 SELECT a.id AS account_id,
    a.user_id,
    a.login_number,
    a.broker_name,
    a.broker_server,
    a.sync_failure_count,
    a.last_connection_error,
    a.last_sync_at,
    a.last_successful_sync_at,
    f.error_code AS last_error_code,
    f.completed_at AS last_failed_at
   FROM (public.trading_accounts a
     LEFT JOIN LATERAL ( SELECT l.error_code,
            l.completed_at
           FROM public.sync_logs l
          WHERE ((l.account_id = a.id) AND (l.status = 'failed'::text))
          ORDER BY l.started_at DESC
         LIMIT 1) f ON (true))
  WHERE ((a.sync_failure_count > 0) AND a.is_active);

--
-- Name: mt5_ledger_reconciliation; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.mt5_ledger_reconciliation WITH (security_invoker='true') AS
 SELECT id AS account_id,
    user_id,
    login_number,
    broker_server,
    currency,
    balance,
    equity,
    ledger_offset AS opening_offset,
    ledger_checked_at AS last_checked_at,
    ledger_drift AS drift,
    ledger_equity_drift AS equity_drift,
    COALESCE(ledger_status, 'unchecked'::text) AS status,
    ledger_gap_since AS gap_since,
    ledger_healed_at AS healed_at,
    ledger_heal_note AS heal_note,
    history_cursor
   FROM public.trading_accounts a;

--
-- Name: mt5_recent_syncs; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.mt5_recent_syncs WITH (security_invoker='true') AS
 SELECT l.started_at,
    l.completed_at,
    l.account_id,
    a.user_id,
    a.login_number,
    a.broker_name,
    a.broker_server,
    l.trigger,
    l.sync_type,
    l.status,
    l.trades_synced,
    l.deals_synced,
    l.duration_ms,
    l.error_code,
    l.error_message,
    l.sync_id,
    l.execution_id,
    l.flow_run_id
   FROM (public.sync_logs l
     JOIN public.trading_accounts a ON ((a.id = l.account_id)))
  WHERE (l.started_at > (now() - '7 days'::interval));

--
-- Name: mt5_server_pauses; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.mt5_server_pauses (
    broker_server text NOT NULL,
    paused_at timestamp with time zone NOT NULL,
    paused_until timestamp with time zone NOT NULL,
    error_code text NOT NULL,
    accounts_failed integer NOT NULL,
    accounts_tried integer NOT NULL,
    execution_id uuid
);

--
-- Name: TABLE mt5_server_pauses; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.mt5_server_pauses IS 'Broker servers paused after most of their accounts failed the same transient way in one cycle.';

--
-- Name: mt5_sync_performance_by_hour; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.mt5_sync_performance_by_hour WITH (security_invoker='true') AS
 SELECT (EXTRACT(hour FROM (started_at AT TIME ZONE 'UTC'::text)))::integer AS hour_utc,
    count(*) AS sync_count,
    count(*) FILTER (WHERE (status = 'failed'::text)) AS failures,
    (round(avg(duration_ms)))::integer AS avg_duration_ms,
    max(duration_ms) AS max_duration_ms,
    (percentile_cont((0.95)::double precision) WITHIN GROUP (ORDER BY ((duration_ms)::double precision)))::integer AS p95_duration_ms,
    sum(trades_synced) AS total_trades_synced,
    sum(deals_synced) AS total_deals_synced
   FROM public.sync_logs l
  WHERE ((started_at > (now() - '7 days'::interval)) AND (completed_at IS NOT NULL))
  GROUP BY ((EXTRACT(hour FROM (started_at AT TIME ZONE 'UTC'::text)))::integer);

--
-- Name: mt5_sync_success_rate_24h; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.mt5_sync_success_rate_24h AS
SELECT
    NULL::uuid AS account_id,
    NULL::uuid AS user_id,
    NULL::bigint AS login_number,
    NULL::text AS broker_name,
    NULL::text AS broker_server,
    NULL::bigint AS total_syncs,
    NULL::bigint AS successes,
    NULL::bigint AS partials,
    NULL::bigint AS failures,
    NULL::bigint AS in_progress,
    NULL::bigint AS skipped,
    NULL::numeric AS success_rate_pct,
    NULL::integer AS avg_duration_ms,
    NULL::timestamp with time zone AS last_started_at;

--
-- Name: sync_commit_chunks; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.sync_commit_chunks (
    sync_id uuid NOT NULL,
    part text NOT NULL,
    seq integer NOT NULL,
    account_id uuid NOT NULL,
    row_count integer NOT NULL,
    rows jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT sync_commit_chunks_part_check CHECK ((part = ANY (ARRAY['deals'::text, 'cash_flows'::text, 'closed_trades'::text, 'open_positions'::text, 'quarantine'::text]))),
    CONSTRAINT sync_commit_chunks_rows_check CHECK (((jsonb_typeof(rows) = 'array'::text) AND (row_count = jsonb_array_length(rows)))),
    CONSTRAINT sync_commit_chunks_seq_check CHECK ((seq >= 0))
);

--
-- Name: TABLE sync_commit_chunks; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.sync_commit_chunks IS 'Chunks of large commits staged over the Data API; emptied by mt5_commit_staged_account_sync.';

--
-- Name: sync_cycle_claims; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.sync_cycle_claims (
    execution_id uuid NOT NULL,
    account_id uuid NOT NULL,
    host text NOT NULL,
    lease_holder uuid NOT NULL,
    outcome text NOT NULL,
    claimed_at timestamp with time zone DEFAULT now() NOT NULL,
    claims integer DEFAULT 1 NOT NULL,
    CONSTRAINT sync_cycle_claims_outcome_check CHECK ((outcome = ANY (ARRAY['claimed'::text, 'skipped'::text, 'deferred'::text])))
);

--
-- Name: sync_cycle_shards; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.sync_cycle_shards (
    execution_id uuid NOT NULL,
    host text NOT NULL,
    flow_run_id uuid,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    summary jsonb
);

--
-- Name: sync_cycles; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.sync_cycles (
    execution_id uuid NOT NULL,
    trigger text NOT NULL,
    sync_type text NOT NULL,
    account_ids uuid[],
    excluded_ids uuid[],
    opened_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT sync_cycles_trigger_check CHECK ((trigger = ANY (ARRAY['scheduled'::text, 'manual'::text, 'backfill'::text])))
);

--
-- Name: sync_quarantine; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.sync_quarantine (
    sync_id uuid NOT NULL,
    kind text NOT NULL,
    ordinal integer NOT NULL,
    account_id uuid NOT NULL,
    ticket bigint,
    reasons text NOT NULL,
    record jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: trades; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.trades (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    account_id uuid NOT NULL,
    ticket bigint NOT NULL,
    symbol text NOT NULL,
    side text NOT NULL,
    type text GENERATED ALWAYS AS (side) STORED,
    status text NOT NULL,
    volume numeric(28,8) NOT NULL,
    open_price numeric(28,8) NOT NULL,
    open_time timestamp with time zone NOT NULL,
    open_time_server bigint NOT NULL,
    close_price numeric(28,8),
    close_time timestamp with time zone,
    close_time_server bigint,
    stop_loss numeric(28,8),
    take_profit numeric(28,8),
    current_price numeric(28,8),
    profit numeric(28,8) NOT NULL,
    swap numeric(28,8) NOT NULL,
    commission numeric(28,8) NOT NULL,
    fee numeric(28,8) NOT NULL,
    net_profit numeric(28,8) NOT NULL,
    magic bigint NOT NULL,
    comment text NOT NULL,
    deal_count integer NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT trades_closed_has_close_time_check CHECK (((status = 'open'::text) OR (close_time IS NOT NULL))),
    CONSTRAINT trades_side_check CHECK ((side = ANY (ARRAY['buy'::text, 'sell'::text]))),
    CONSTRAINT trades_status_check CHECK ((status = ANY (ARRAY['open'::text, 'closed'::text])))
);

--
-- Name: account_snapshots account_snapshots_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.account_snapshots
    ADD CONSTRAINT account_snapshots_pkey PRIMARY KEY (account_id, taken_at);

--
-- Name: cash_flows cash_flows_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.cash_flows
    ADD CONSTRAINT cash_flows_pkey PRIMARY KEY (account_id, deal_ticket);

--
-- Name: deals deals_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.deals
    ADD CONSTRAINT deals_pkey PRIMARY KEY (account_id, ticket);

--
-- Name: mt5_account_health_events mt5_account_health_events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.mt5_account_health_events
    ADD CONSTRAINT mt5_account_health_events_pkey PRIMARY KEY (id);

--
-- Name: mt5_account_health mt5_account_health_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.mt5_account_health
    ADD CONSTRAINT mt5_account_health_pkey PRIMARY KEY (account_id);

--
-- Name: mt5_server_pauses mt5_server_pauses_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.mt5_server_pauses
    ADD CONSTRAINT mt5_server_pauses_pkey PRIMARY KEY (broker_server);

--
-- Name: sync_commit_chunks sync_commit_chunks_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sync_commit_chunks
    ADD CONSTRAINT sync_commit_chunks_pkey PRIMARY KEY (sync_id, part, seq);

--
-- Name: sync_cycle_claims sync_cycle_claims_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sync_cycle_claims
    ADD CONSTRAINT sync_cycle_claims_pkey PRIMARY KEY (execution_id, account_id);

--
-- Name: sync_cycle_shards sync_cycle_shards_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sync_cycle_shards
    ADD CONSTRAINT sync_cycle_shards_pkey PRIMARY KEY (execution_id, host);

--
-- Name: sync_cycles sync_cycles_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sync_cycles
    ADD CONSTRAINT sync_cycles_pkey PRIMARY KEY (execution_id);

--
-- Name: sync_logs sync_logs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sync_logs
    ADD CONSTRAINT sync_logs_pkey PRIMARY KEY (id);

--
-- Name: sync_logs sync_logs_sync_id_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sync_logs
    ADD CONSTRAINT sync_logs_sync_id_key UNIQUE (sync_id);

--
-- Name: sync_quarantine sync_quarantine_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sync_quarantine
    ADD CONSTRAINT sync_quarantine_pkey PRIMARY KEY (sync_id, kind, ordinal);

--
-- Name: trades trades_account_ticket_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.trades
    ADD CONSTRAINT trades_account_ticket_key UNIQUE (account_id, ticket);

--
-- Name: trades trades_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.trades
    ADD CONSTRAINT trades_pkey PRIMARY KEY (id);

--
-- Name: trading_accounts trading_accounts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.trading_accounts
    ADD CONSTRAINT trading_accounts_pkey PRIMARY KEY (id);

--
-- Name: trading_accounts trading_accounts_server_login_user_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.trading_accounts
    ADD CONSTRAINT trading_accounts_server_login_user_key UNIQUE (broker_server, login_number, user_id);

--
-- Name: cash_flows_account_time_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX cash_flows_account_time_idx ON public.cash_flows USING btree (account_id, "time");

--
-- Name: deals_account_position_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX deals_account_position_idx ON public.deals USING btree (account_id, position_id);

--
-- Name: deals_account_time_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX deals_account_time_idx ON public.deals USING btree (account_id, "time");

--
-- Name: sync_commit_chunks_account_created_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX sync_commit_chunks_account_created_idx ON public.sync_commit_chunks USING btree (account_id, created_at);

--
-- Name: sync_logs_account_started_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX sync_logs_account_started_idx ON public.sync_logs USING btree (account_id, started_at DESC);

--
-- Name: sync_logs_execution_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX sync_logs_execution_idx ON public.sync_logs USING btree (execution_id, account_id) WHERE (execution_id IS NOT NULL);

--
-- Name: sync_logs_started_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX sync_logs_started_idx ON public.sync_logs USING btree (started_at);

--
-- Name: sync_logs_verify_account_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX sync_logs_verify_account_idx ON public.sync_logs USING btree (account_id, created_at DESC) WHERE (sync_type = 'verify'::text);

--
-- Name: sync_quarantine_account_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX sync_quarantine_account_idx ON public.sync_quarantine USING btree (account_id, created_at);

--
-- Name: trades_account_close_time_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX trades_account_close_time_idx ON public.trades USING btree (account_id, close_time DESC);

--
-- Name: trades_account_status_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX trades_account_status_idx ON public.trades USING btree (account_id, status);

--
-- Name: trading_accounts_active_sync_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX trading_accounts_active_sync_idx ON public.trading_accounts USING btree (last_sync_at NULLS FIRST, id) WHERE is_active;

--
-- Name: trading_accounts_lease_holder_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX trading_accounts_lease_holder_idx ON public.trading_accounts USING btree (sync_lease_holder) WHERE (sync_lease_holder IS NOT NULL);

--
-- Name: trading_accounts_user_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX trading_accounts_user_idx ON public.trading_accounts USING btree (user_id);

--
-- Name: mt5_sync_success_rate_24h _RETURN; Type: RULE; Schema: public; Owner: -
--

CREATE OR REPLACE VIEW public.mt5_sync_success_rate_24h WITH (security_invoker='true') AS
 SELECT a.id AS account_id,
    a.user_id,
    a.login_number,
    a.broker_name,
    a.broker_server,
    count(*) AS total_syncs,
    count(*) FILTER (WHERE (l.status = 'success'::text)) AS successes,
    count(*) FILTER (WHERE (l.status = 'partial'::text)) AS partials,
    count(*) FILTER (WHERE (l.status = 'failed'::text)) AS failures,
    count(*) FILTER (WHERE (l.status = 'processing'::text)) AS in_progress,
    count(*) FILTER (WHERE (l.status = ANY (ARRAY['deferred'::text, 'skipped'::text]))) AS skipped,
    round(((100.0 * (count(*) FILTER (WHERE (l.status = 'success'::text)))::numeric) / (NULLIF(count(*) FILTER (WHERE (l.status = ANY (ARRAY['success'::text, 'partial'::text, 'failed'::text]))), 0))::numeric), 2) AS success_rate_pct,
    (round(avg(l.duration_ms)))::integer AS avg_duration_ms,
    max(l.started_at) AS last_started_at
   FROM (public.sync_logs l
     JOIN public.trading_accounts a ON ((a.id = l.account_id)))
  WHERE (l.started_at > (now() - '24:00:00'::interval))
  GROUP BY a.id;

--
-- Name: sync_logs sync_logs_track_account_health_insert; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER sync_logs_track_account_health_insert AFTER INSERT ON public.sync_logs FOR EACH ROW WHEN ((new.status = ANY (ARRAY['success'::text, 'partial'::text, 'failed'::text]))) EXECUTE FUNCTION public.mt5_track_account_health();

--
-- Name: sync_logs sync_logs_track_account_health_update; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER sync_logs_track_account_health_update AFTER UPDATE OF status ON public.sync_logs FOR EACH ROW WHEN (((new.status = ANY (ARRAY['success'::text, 'partial'::text, 'failed'::text])) AND (old.status IS DISTINCT FROM new.status))) EXECUTE FUNCTION public.mt5_track_account_health();

--
-- Name: trading_accounts trading_accounts_credentials_changed; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER trading_accounts_credentials_changed AFTER UPDATE OF investor_password_encrypted ON public.trading_accounts FOR EACH ROW WHEN ((old.investor_password_encrypted IS DISTINCT FROM new.investor_password_encrypted)) EXECUTE FUNCTION public.mt5_credentials_changed();

--
-- Name: account_snapshots account_snapshots_account_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.account_snapshots
    ADD CONSTRAINT account_snapshots_account_id_fkey FOREIGN KEY (account_id) REFERENCES public.trading_accounts(id) ON DELETE CASCADE;

--
-- Name: cash_flows cash_flows_account_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.cash_flows
    ADD CONSTRAINT cash_flows_account_id_fkey FOREIGN KEY (account_id) REFERENCES public.trading_accounts(id) ON DELETE CASCADE;

--
-- Name: deals deals_account_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.deals
    ADD CONSTRAINT deals_account_id_fkey FOREIGN KEY (account_id) REFERENCES public.trading_accounts(id) ON DELETE CASCADE;

--
-- Name: mt5_account_health mt5_account_health_account_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.mt5_account_health
    ADD CONSTRAINT mt5_account_health_account_id_fkey FOREIGN KEY (account_id) REFERENCES public.trading_accounts(id) ON DELETE CASCADE;

--
-- Name: mt5_account_health_events mt5_account_health_events_account_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.mt5_account_health_events
    ADD CONSTRAINT mt5_account_health_events_account_id_fkey FOREIGN KEY (account_id) REFERENCES public.trading_accounts(id) ON DELETE CASCADE;

--
-- Name: sync_commit_chunks sync_commit_chunks_account_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sync_commit_chunks
    ADD CONSTRAINT sync_commit_chunks_account_id_fkey FOREIGN KEY (account_id) REFERENCES public.trading_accounts(id) ON DELETE CASCADE;

--
-- Name: sync_cycle_claims sync_cycle_claims_account_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sync_cycle_claims
    ADD CONSTRAINT sync_cycle_claims_account_id_fkey FOREIGN KEY (account_id) REFERENCES public.trading_accounts(id) ON DELETE CASCADE;

--
-- Name: sync_cycle_claims sync_cycle_claims_execution_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sync_cycle_claims
    ADD CONSTRAINT sync_cycle_claims_execution_id_fkey FOREIGN KEY (execution_id) REFERENCES public.sync_cycles(execution_id) ON DELETE CASCADE;

--
-- Name: sync_cycle_shards sync_cycle_shards_execution_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sync_cycle_shards
    ADD CONSTRAINT sync_cycle_shards_execution_id_fkey FOREIGN KEY (execution_id) REFERENCES public.sync_cycles(execution_id) ON DELETE CASCADE;

--
-- Name: sync_logs sync_logs_account_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sync_logs
    ADD CONSTRAINT sync_logs_account_id_fkey FOREIGN KEY (account_id) REFERENCES public.trading_accounts(id) ON DELETE CASCADE;

--
-- Name: sync_quarantine sync_quarantine_account_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sync_quarantine
    ADD CONSTRAINT sync_quarantine_account_id_fkey FOREIGN KEY (account_id) REFERENCES public.trading_accounts(id) ON DELETE CASCADE;

--
-- Name: trades trades_account_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.trades
    ADD CONSTRAINT trades_account_id_fkey FOREIGN KEY (account_id) REFERENCES public.trading_accounts(id) ON DELETE CASCADE;

--
-- Name: trading_accounts trading_accounts_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.trading_accounts
    ADD CONSTRAINT trading_accounts_user_id_fkey FOREIGN KEY (user_id) REFERENCES auth.users(id) ON DELETE CASCADE;

--
-- Name: account_snapshots; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.account_snapshots ENABLE ROW LEVEL SECURITY;

--
-- Name: account_snapshots account_snapshots_select_own; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY account_snapshots_select_own ON public.account_snapshots FOR SELECT TO authenticated USING ((account_id IN ( SELECT a.id
   FROM public.trading_accounts a
  WHERE (a.user_id = ( SELECT auth.uid() AS uid)))));

--
-- Name: account_snapshots account_snapshots_service_role_all; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY account_snapshots_service_role_all ON public.account_snapshots TO service_role USING (true) WITH CHECK (true);

--
-- Name: cash_flows; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.cash_flows ENABLE ROW LEVEL SECURITY;

--
-- Name: cash_flows cash_flows_select_own; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY cash_flows_select_own ON public.cash_flows FOR SELECT TO authenticated USING ((account_id IN ( SELECT a.id
   FROM public.trading_accounts a
  WHERE (a.user_id = ( SELECT auth.uid() AS uid)))));

--
-- Name: cash_flows cash_flows_service_role_all; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY cash_flows_service_role_all ON public.cash_flows TO service_role USING (true) WITH CHECK (true);

--
-- Name: deals; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.deals ENABLE ROW LEVEL SECURITY;

--
-- Name: deals deals_select_own; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY deals_select_own ON public.deals FOR SELECT TO authenticated USING ((account_id IN ( SELECT a.id
   FROM public.trading_accounts a
  WHERE (a.user_id = ( SELECT auth.uid() AS uid)))));

--
-- Name: deals deals_service_role_all; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY deals_service_role_all ON public.deals TO service_role USING (true) WITH CHECK (true);

--
-- Name: mt5_account_health; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.mt5_account_health ENABLE ROW LEVEL SECURITY;

--
-- Name: mt5_account_health_events; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.mt5_account_health_events ENABLE ROW LEVEL SECURITY;

--
-- Name: mt5_account_health_events mt5_account_health_events_service_role_all; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY mt5_account_health_events_service_role_all ON public.mt5_account_health_events TO service_role USING (true) WITH CHECK (true);

--
-- Name: mt5_account_health mt5_account_health_select_own; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY mt5_account_health_select_own ON public.mt5_account_health FOR SELECT TO authenticated USING ((account_id IN ( SELECT a.id
   FROM public.trading_accounts a
  WHERE (a.user_id = ( SELECT auth.uid() AS uid)))));

--
-- Name: mt5_account_health mt5_account_health_service_role_all; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY mt5_account_health_service_role_all ON public.mt5_account_health TO service_role USING (true) WITH CHECK (true);

--
-- Name: mt5_server_pauses; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.mt5_server_pauses ENABLE ROW LEVEL SECURITY;

--
-- Name: mt5_server_pauses mt5_server_pauses_select_own; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY mt5_server_pauses_select_own ON public.mt5_server_pauses FOR SELECT TO authenticated USING ((broker_server IN ( SELECT a.broker_server
   FROM public.trading_accounts a
  WHERE (a.user_id = ( SELECT auth.uid() AS uid)))));

--
-- Name: mt5_server_pauses mt5_server_pauses_service_role_all; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY mt5_server_pauses_service_role_all ON public.mt5_server_pauses TO service_role USING (true) WITH CHECK (true);

--
-- Name: sync_commit_chunks; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.sync_commit_chunks ENABLE ROW LEVEL SECURITY;

--
-- Name: sync_commit_chunks sync_commit_chunks_service_role_all; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY sync_commit_chunks_service_role_all ON public.sync_commit_chunks TO service_role USING (true) WITH CHECK (true);

--
-- Name: sync_cycle_claims; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.sync_cycle_claims ENABLE ROW LEVEL SECURITY;

--
-- Name: sync_cycle_claims sync_cycle_claims_service_role_all; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY sync_cycle_claims_service_role_all ON public.sync_cycle_claims TO service_role USING (true) WITH CHECK (true);

--
-- Name: sync_cycle_shards; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.sync_cycle_shards ENABLE ROW LEVEL SECURITY;

--
-- Name: sync_cycle_shards sync_cycle_shards_service_role_all; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY sync_cycle_shards_service_role_all ON public.sync_cycle_shards TO service_role USING (true) WITH CHECK (true);

--
-- Name: sync_cycles; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.sync_cycles ENABLE ROW LEVEL SECURITY;

--
-- Name: sync_cycles sync_cycles_service_role_all; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY sync_cycles_service_role_all ON public.sync_cycles TO service_role USING (true) WITH CHECK (true);

--
-- Name: sync_logs; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.sync_logs ENABLE ROW LEVEL SECURITY;

--
-- Name: sync_logs sync_logs_select_own; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY sync_logs_select_own ON public.sync_logs FOR SELECT TO authenticated USING ((account_id IN ( SELECT a.id
   FROM public.trading_accounts a
  WHERE (a.user_id = ( SELECT auth.uid() AS uid)))));

--
-- Name: sync_logs sync_logs_service_role_all; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY sync_logs_service_role_all ON public.sync_logs TO service_role USING (true) WITH CHECK (true);

--
-- Name: sync_quarantine; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.sync_quarantine ENABLE ROW LEVEL SECURITY;

--
-- Name: sync_quarantine sync_quarantine_select_own; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY sync_quarantine_select_own ON public.sync_quarantine FOR SELECT TO authenticated USING ((account_id IN ( SELECT a.id
   FROM public.trading_accounts a
  WHERE (a.user_id = ( SELECT auth.uid() AS uid)))));

--
-- Name: sync_quarantine sync_quarantine_service_role_all; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY sync_quarantine_service_role_all ON public.sync_quarantine TO service_role USING (true) WITH CHECK (true);

--
-- Name: trades; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.trades ENABLE ROW LEVEL SECURITY;

--
-- Name: trades trades_select_own; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY trades_select_own ON public.trades FOR SELECT TO authenticated USING ((account_id IN ( SELECT a.id
   FROM public.trading_accounts a
  WHERE (a.user_id = ( SELECT auth.uid() AS uid)))));

--
-- Name: trades trades_service_role_all; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY trades_service_role_all ON public.trades TO service_role USING (true) WITH CHECK (true);

--
-- Name: trading_accounts; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.trading_accounts ENABLE ROW LEVEL SECURITY;

--
-- Name: trading_accounts trading_accounts_select_own; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY trading_accounts_select_own ON public.trading_accounts FOR SELECT TO authenticated USING ((( SELECT auth.uid() AS uid) = user_id));

--
-- Name: trading_accounts trading_accounts_service_role_all; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY trading_accounts_service_role_all ON public.trading_accounts TO service_role USING (true) WITH CHECK (true);

--
-- Name: supabase_realtime; Type: PUBLICATION; Schema: -; Owner: -
--

CREATE PUBLICATION supabase_realtime WITH (publish = 'insert, update, delete, truncate');

--
-- Name: supabase_realtime account_snapshots; Type: PUBLICATION TABLE; Schema: public; Owner: -
--

ALTER PUBLICATION supabase_realtime ADD TABLE ONLY public.account_snapshots;

--
-- Name: supabase_realtime cash_flows; Type: PUBLICATION TABLE; Schema: public; Owner: -
--

ALTER PUBLICATION supabase_realtime ADD TABLE ONLY public.cash_flows;

--
-- Name: supabase_realtime deals; Type: PUBLICATION TABLE; Schema: public; Owner: -
--

ALTER PUBLICATION supabase_realtime ADD TABLE ONLY public.deals;

--
-- Name: supabase_realtime sync_logs; Type: PUBLICATION TABLE; Schema: public; Owner: -
--

ALTER PUBLICATION supabase_realtime ADD TABLE ONLY public.sync_logs;

--
-- Name: supabase_realtime trades; Type: PUBLICATION TABLE; Schema: public; Owner: -
--

ALTER PUBLICATION supabase_realtime ADD TABLE ONLY public.trades;

--
-- Name: supabase_realtime trading_accounts; Type: PUBLICATION TABLE; Schema: public; Owner: -
--

ALTER PUBLICATION supabase_realtime ADD TABLE ONLY public.trading_accounts (id, user_id, login_number, broker_name, broker_server, server_time_rule, is_active, currency, leverage, margin_mode, balance, equity, margin, free_margin, margin_level, last_sync_at, last_successful_sync_at, sync_failure_count, last_connection_error, history_cursor, sync_lease_holder, sync_lease_until, last_manual_sync_at, created_at, updated_at, sync_lease_flow_run_id, ledger_offset, ledger_status, ledger_checked_at, ledger_drift, ledger_equity_drift, ledger_gap_since, ledger_healed_at, ledger_heal_note);

--
-- Name: FUNCTION mt5_account_due(p_account_id uuid, p_broker_server text, p_now timestamp with time zone); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_account_due(p_account_id uuid, p_broker_server text, p_now timestamp with time zone) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_account_due(p_account_id uuid, p_broker_server text, p_now timestamp with time zone) TO authenticated;
GRANT ALL ON FUNCTION public.mt5_account_due(p_account_id uuid, p_broker_server text, p_now timestamp with time zone) TO service_role;

--
-- Name: FUNCTION mt5_account_freshness_at(p_now timestamp with time zone, p_slo_s integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_account_freshness_at(p_now timestamp with time zone, p_slo_s integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_account_freshness_at(p_now timestamp with time zone, p_slo_s integer) TO authenticated;
GRANT ALL ON FUNCTION public.mt5_account_freshness_at(p_now timestamp with time zone, p_slo_s integer) TO service_role;

--
-- Name: FUNCTION mt5_account_schedule_at(p_now timestamp with time zone, p_account_ids uuid[]); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_account_schedule_at(p_now timestamp with time zone, p_account_ids uuid[]) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_account_schedule_at(p_now timestamp with time zone, p_account_ids uuid[]) TO authenticated;
GRANT ALL ON FUNCTION public.mt5_account_schedule_at(p_now timestamp with time zone, p_account_ids uuid[]) TO service_role;

--
-- Name: FUNCTION mt5_acquire_sync_lease(p_account_id uuid, p_holder uuid, p_ttl_seconds integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_acquire_sync_lease(p_account_id uuid, p_holder uuid, p_ttl_seconds integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_acquire_sync_lease(p_account_id uuid, p_holder uuid, p_ttl_seconds integer) TO service_role;

--
-- Name: FUNCTION mt5_backoff_delay(p_kind text, p_failures integer, p_account_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_backoff_delay(p_kind text, p_failures integer, p_account_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_backoff_delay(p_kind text, p_failures integer, p_account_id uuid) TO authenticated;
GRANT ALL ON FUNCTION public.mt5_backoff_delay(p_kind text, p_failures integer, p_account_id uuid) TO service_role;

--
-- Name: FUNCTION mt5_break_sync_lease(p_account_id uuid, p_holder uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_break_sync_lease(p_account_id uuid, p_holder uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_break_sync_lease(p_account_id uuid, p_holder uuid) TO service_role;

--
-- Name: FUNCTION mt5_claim_cycle_accounts(p_execution_id uuid, p_host text, p_limit integer, p_lease_seconds integer, p_flow_run_id uuid, p_estimate_syncs integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_claim_cycle_accounts(p_execution_id uuid, p_host text, p_limit integer, p_lease_seconds integer, p_flow_run_id uuid, p_estimate_syncs integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_claim_cycle_accounts(p_execution_id uuid, p_host text, p_limit integer, p_lease_seconds integer, p_flow_run_id uuid, p_estimate_syncs integer) TO service_role;

--
-- Name: FUNCTION mt5_claim_manual_sync(p_account_id uuid, p_user_id uuid, p_sync_id uuid, p_sync_type text, p_window_seconds integer, p_default_estimate_seconds integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_claim_manual_sync(p_account_id uuid, p_user_id uuid, p_sync_id uuid, p_sync_type text, p_window_seconds integer, p_default_estimate_seconds integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_claim_manual_sync(p_account_id uuid, p_user_id uuid, p_sync_id uuid, p_sync_type text, p_window_seconds integer, p_default_estimate_seconds integer) TO service_role;

--
-- Name: FUNCTION mt5_col_bigint(c jsonb, k text, n integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_col_bigint(c jsonb, k text, n integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_col_bigint(c jsonb, k text, n integer) TO service_role;

--
-- Name: FUNCTION mt5_col_check(a anyarray, k text, n integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_col_check(a anyarray, k text, n integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_col_check(a anyarray, k text, n integer) TO service_role;

--
-- Name: FUNCTION mt5_col_int(c jsonb, k text, n integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_col_int(c jsonb, k text, n integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_col_int(c jsonb, k text, n integer) TO service_role;

--
-- Name: FUNCTION mt5_col_literal(c jsonb, k text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_col_literal(c jsonb, k text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_col_literal(c jsonb, k text) TO service_role;

--
-- Name: FUNCTION mt5_col_numeric(c jsonb, k text, n integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_col_numeric(c jsonb, k text, n integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_col_numeric(c jsonb, k text, n integer) TO service_role;

--
-- Name: FUNCTION mt5_col_text(c jsonb, k text, n integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_col_text(c jsonb, k text, n integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_col_text(c jsonb, k text, n integer) TO service_role;

--
-- Name: FUNCTION mt5_col_timestamptz(c jsonb, k text, n integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_col_timestamptz(c jsonb, k text, n integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_col_timestamptz(c jsonb, k text, n integer) TO service_role;

--
-- Name: FUNCTION mt5_commit_account_sync(p jsonb); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_commit_account_sync(p jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_commit_account_sync(p jsonb) TO service_role;

--
-- Name: FUNCTION mt5_commit_staged_account_sync(p jsonb); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_commit_staged_account_sync(p jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_commit_staged_account_sync(p jsonb) TO service_role;

--
-- Name: FUNCTION mt5_connect_account(p_user_id uuid, p_login_number bigint, p_broker_server text, p_password_encrypted text, p_server_time_rule text, p_sync_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_connect_account(p_user_id uuid, p_login_number bigint, p_broker_server text, p_password_encrypted text, p_server_time_rule text, p_sync_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_connect_account(p_user_id uuid, p_login_number bigint, p_broker_server text, p_password_encrypted text, p_server_time_rule text, p_sync_id uuid) TO service_role;

--
-- Name: FUNCTION mt5_credentials_changed(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_credentials_changed() FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_credentials_changed() TO service_role;

--
-- Name: FUNCTION mt5_cycle_report(p_execution_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_cycle_report(p_execution_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_cycle_report(p_execution_id uuid) TO service_role;

--
-- Name: FUNCTION mt5_deactivate_account(p_account_id uuid, p_user_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_deactivate_account(p_account_id uuid, p_user_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_deactivate_account(p_account_id uuid, p_user_id uuid) TO service_role;

--
-- Name: FUNCTION mt5_failure_kind(p_error_code text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_failure_kind(p_error_code text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_failure_kind(p_error_code text) TO authenticated;
GRANT ALL ON FUNCTION public.mt5_failure_kind(p_error_code text) TO service_role;

--
-- Name: FUNCTION mt5_finish_verify_sync(p jsonb); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_finish_verify_sync(p jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_finish_verify_sync(p jsonb) TO service_role;

--
-- Name: FUNCTION mt5_mark_sync_started(p jsonb); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_mark_sync_started(p jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_mark_sync_started(p jsonb) TO service_role;

--
-- Name: FUNCTION mt5_open_sync_cycle(p_execution_id uuid, p_trigger text, p_sync_type text, p_account_ids uuid[], p_excluded_ids uuid[]); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_open_sync_cycle(p_execution_id uuid, p_trigger text, p_sync_type text, p_account_ids uuid[], p_excluded_ids uuid[]) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_open_sync_cycle(p_execution_id uuid, p_trigger text, p_sync_type text, p_account_ids uuid[], p_excluded_ids uuid[]) TO service_role;

--
-- Name: FUNCTION mt5_pause_failing_servers(p jsonb); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_pause_failing_servers(p jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_pause_failing_servers(p jsonb) TO service_role;

--
-- Name: FUNCTION mt5_payload_array_length(p jsonb, fn text, key text, nullable boolean); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_payload_array_length(p jsonb, fn text, key text, nullable boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_payload_array_length(p jsonb, fn text, key text, nullable boolean) TO service_role;

--
-- Name: FUNCTION mt5_payload_choice(p jsonb, fn text, key text, allowed text[]); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_payload_choice(p jsonb, fn text, key text, allowed text[]) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_payload_choice(p jsonb, fn text, key text, allowed text[]) TO service_role;

--
-- Name: FUNCTION mt5_payload_columns(p jsonb, fn text, key text, cols text[], nullable boolean); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_payload_columns(p jsonb, fn text, key text, cols text[], nullable boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_payload_columns(p jsonb, fn text, key text, cols text[], nullable boolean) TO service_role;

--
-- Name: FUNCTION mt5_payload_object(p jsonb, fn text, key text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_payload_object(p jsonb, fn text, key text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_payload_object(p jsonb, fn text, key text) TO service_role;

--
-- Name: FUNCTION mt5_payload_text(p jsonb, fn text, key text, required boolean); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_payload_text(p jsonb, fn text, key text, required boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_payload_text(p jsonb, fn text, key text, required boolean) TO service_role;

--
-- Name: FUNCTION mt5_payload_timestamptz(p jsonb, fn text, key text, required boolean); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_payload_timestamptz(p jsonb, fn text, key text, required boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_payload_timestamptz(p jsonb, fn text, key text, required boolean) TO service_role;

--
-- Name: FUNCTION mt5_payload_uuid(p jsonb, fn text, key text, required boolean); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_payload_uuid(p jsonb, fn text, key text, required boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_payload_uuid(p jsonb, fn text, key text, required boolean) TO service_role;

--
-- Name: FUNCTION mt5_record_cycle_shard(p_execution_id uuid, p_host text, p_flow_run_id uuid, p_summary jsonb); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_record_cycle_shard(p_execution_id uuid, p_host text, p_flow_run_id uuid, p_summary jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_record_cycle_shard(p_execution_id uuid, p_host text, p_flow_run_id uuid, p_summary jsonb) TO service_role;

--
-- Name: FUNCTION mt5_record_sync_failure(p jsonb); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_record_sync_failure(p jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_record_sync_failure(p jsonb) TO service_role;

--
-- Name: FUNCTION mt5_record_syncs_deferred(p jsonb); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_record_syncs_deferred(p jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_record_syncs_deferred(p jsonb) TO service_role;

--
-- Name: FUNCTION mt5_release_manual_sync(p_sync_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_release_manual_sync(p_sync_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_release_manual_sync(p_sync_id uuid) TO service_role;

--
-- Name: FUNCTION mt5_release_sync_lease(p_account_id uuid, p_holder uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_release_sync_lease(p_account_id uuid, p_holder uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_release_sync_lease(p_account_id uuid, p_holder uuid) TO service_role;

--
-- Name: FUNCTION mt5_renew_sync_leases(p_holders uuid[], p_ttl_seconds integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_renew_sync_leases(p_holders uuid[], p_ttl_seconds integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_renew_sync_leases(p_holders uuid[], p_ttl_seconds integer) TO service_role;

--
-- Name: FUNCTION mt5_replace_account_credentials(p_account_id uuid, p_user_id uuid, p_password_encrypted text, p_sync_id uuid, p_window_seconds integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_replace_account_credentials(p_account_id uuid, p_user_id uuid, p_password_encrypted text, p_sync_id uuid, p_window_seconds integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_replace_account_credentials(p_account_id uuid, p_user_id uuid, p_password_encrypted text, p_sync_id uuid, p_window_seconds integer) TO service_role;

--
-- Name: FUNCTION mt5_sync_duration_estimates(p_account_ids uuid[], p_last integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_sync_duration_estimates(p_account_ids uuid[], p_last integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_sync_duration_estimates(p_account_ids uuid[], p_last integer) TO service_role;

--
-- Name: FUNCTION mt5_sync_lease_of(p_account_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_sync_lease_of(p_account_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_sync_lease_of(p_account_id uuid) TO service_role;

--
-- Name: FUNCTION mt5_take_health_events(p_limit integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_take_health_events(p_limit integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_take_health_events(p_limit integer) TO service_role;

--
-- Name: FUNCTION mt5_track_account_health(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_track_account_health() FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_track_account_health() TO service_role;

--
-- Name: FUNCTION mt5_trade_columns(c jsonb, n integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_trade_columns(c jsonb, n integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_trade_columns(c jsonb, n integer) TO service_role;

--
-- Name: FUNCTION mt5_unclaim_cycle_accounts(p_execution_id uuid, p_account_ids uuid[], p_outcome text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.mt5_unclaim_cycle_accounts(p_execution_id uuid, p_account_ids uuid[], p_outcome text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.mt5_unclaim_cycle_accounts(p_execution_id uuid, p_account_ids uuid[], p_outcome text) TO service_role;

--
-- Name: TABLE account_snapshots; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.account_snapshots TO service_role;
GRANT SELECT ON TABLE public.account_snapshots TO authenticated;

--
-- Name: TABLE cash_flows; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.cash_flows TO service_role;
GRANT SELECT ON TABLE public.cash_flows TO authenticated;

--
-- Name: TABLE deals; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.deals TO service_role;
GRANT SELECT ON TABLE public.deals TO authenticated;

--
-- Name: TABLE mt5_account_freshness; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.mt5_account_freshness TO authenticated;
GRANT SELECT ON TABLE public.mt5_account_freshness TO service_role;

--
-- Name: TABLE mt5_account_health; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.mt5_account_health TO service_role;
GRANT SELECT ON TABLE public.mt5_account_health TO authenticated;

--
-- Name: TABLE mt5_account_health_events; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.mt5_account_health_events TO service_role;

--
-- Name: TABLE mt5_account_schedule; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.mt5_account_schedule TO authenticated;
GRANT SELECT ON TABLE public.mt5_account_schedule TO service_role;

--
-- Name: TABLE sync_logs; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.sync_logs TO service_role;
GRANT SELECT ON TABLE public.sync_logs TO authenticated;

--
-- Name: TABLE trading_accounts; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.trading_accounts TO service_role;

--
-- Name: COLUMN trading_accounts.id; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(id) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.user_id; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(user_id) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.login_number; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(login_number) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.broker_name; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(broker_name) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.broker_server; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(broker_server) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.server_time_rule; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(server_time_rule) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.is_active; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(is_active) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.currency; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(currency) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.leverage; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(leverage) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.margin_mode; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(margin_mode) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.balance; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(balance) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.equity; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(equity) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.margin; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(margin) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.free_margin; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(free_margin) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.margin_level; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(margin_level) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.last_sync_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(last_sync_at) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.last_successful_sync_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(last_successful_sync_at) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.sync_failure_count; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(sync_failure_count) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.last_connection_error; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(last_connection_error) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.history_cursor; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(history_cursor) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.last_manual_sync_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(last_manual_sync_at) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.created_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(created_at) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.updated_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(updated_at) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.ledger_offset; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(ledger_offset) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.ledger_status; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(ledger_status) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.ledger_checked_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(ledger_checked_at) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.ledger_drift; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(ledger_drift) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.ledger_equity_drift; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(ledger_equity_drift) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.ledger_gap_since; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(ledger_gap_since) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.ledger_healed_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(ledger_healed_at) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: COLUMN trading_accounts.ledger_heal_note; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(ledger_heal_note) ON TABLE public.trading_accounts TO authenticated;

--
-- Name: TABLE mt5_accounts_with_failures; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.mt5_accounts_with_failures TO authenticated;
GRANT SELECT ON TABLE public.mt5_accounts_with_failures TO service_role;

--
-- Name: TABLE mt5_ledger_reconciliation; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.mt5_ledger_reconciliation TO authenticated;
GRANT SELECT ON TABLE public.mt5_ledger_reconciliation TO service_role;

--
-- Name: TABLE mt5_recent_syncs; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.mt5_recent_syncs TO authenticated;
GRANT SELECT ON TABLE public.mt5_recent_syncs TO service_role;

--
-- Name: TABLE mt5_server_pauses; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.mt5_server_pauses TO service_role;
GRANT SELECT ON TABLE public.mt5_server_pauses TO authenticated;

--
-- Name: TABLE mt5_sync_performance_by_hour; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.mt5_sync_performance_by_hour TO authenticated;
GRANT SELECT ON TABLE public.mt5_sync_performance_by_hour TO service_role;

--
-- Name: TABLE mt5_sync_success_rate_24h; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.mt5_sync_success_rate_24h TO authenticated;
GRANT SELECT ON TABLE public.mt5_sync_success_rate_24h TO service_role;

--
-- Name: TABLE sync_commit_chunks; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.sync_commit_chunks TO service_role;

--
-- Name: TABLE sync_cycle_claims; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.sync_cycle_claims TO service_role;

--
-- Name: TABLE sync_cycle_shards; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.sync_cycle_shards TO service_role;

--
-- Name: TABLE sync_cycles; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.sync_cycles TO service_role;

--
-- Name: TABLE sync_quarantine; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.sync_quarantine TO service_role;
GRANT SELECT ON TABLE public.sync_quarantine TO authenticated;

--
-- Name: TABLE trades; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.trades TO service_role;
GRANT SELECT ON TABLE public.trades TO authenticated;

--
-- PostgreSQL database dump complete
--
