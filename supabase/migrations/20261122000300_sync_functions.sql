-- Write path of mt5-sync: database functions, one per transaction the pipeline needs.
--
-- Atomic multi-table writes through Supabase's REST API are only possible inside ONE database
-- function (`.rpc(...)`); the same functions serve the direct psycopg connection, so the write
-- semantics are defined once, here, for both transports.
--
-- Determinism: these functions take every stored timestamp from the payload (never now()), and
-- upserts only rewrite rows whose values actually change. Calling a function twice with the same
-- payload therefore leaves every table byte-identical -- what makes a retried commit harmless.
-- Only the lease functions read the clock: a lease is about real time.
--
-- All functions are SECURITY INVOKER with a pinned search_path; TimeZone is pinned to UTC so
-- timestamps without an offset cannot be read in a session's local zone, and jsonb output of
-- timestamps is always "+00:00".

-- ---------------------------------------------------------------- payload helpers
-- Validation helpers: a malformed payload fails with a message naming the field, instead of an
-- anonymous cast error from deep inside an INSERT.

create or replace function public.mt5_payload_text(
    p jsonb, fn text, key text, required boolean default true
) returns text
language plpgsql
immutable
security invoker
set search_path = public, pg_temp
as $$
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

create or replace function public.mt5_payload_uuid(
    p jsonb, fn text, key text, required boolean default true
) returns uuid
language plpgsql
immutable
security invoker
set search_path = public, pg_temp
as $$
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
$$;

-- An ISO 8601 instant WITH an explicit offset ("Z" or "+00:00"): words such as 'now' or
-- 'today' are accepted by PostgreSQL's timestamptz input but would break determinism.
create or replace function public.mt5_payload_timestamptz(
    p jsonb, fn text, key text, required boolean default true
) returns timestamptz
language plpgsql
stable
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
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
$$;

create or replace function public.mt5_payload_choice(
    p jsonb, fn text, key text, allowed text[]
) returns text
language plpgsql
immutable
security invoker
set search_path = public, pg_temp
as $$
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

-- Checks that p.key is a JSON array (or, when nullable, null/absent) and returns its length
-- (null when absent and nullable).
create or replace function public.mt5_payload_array_length(
    p jsonb, fn text, key text, nullable boolean default false
) returns integer
language plpgsql
immutable
security invoker
set search_path = public, pg_temp
as $$
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

create or replace function public.mt5_payload_object(
    p jsonb, fn text, key text
) returns jsonb
language plpgsql
immutable
security invoker
set search_path = public, pg_temp
as $$
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

-- ---------------------------------------------------------------- leases
-- "Two syncs of one account never run at once", across processes and hosts: the scheduled
-- cycle and a manual sync agree through this row, and a lease held by a dead worker expires.

create or replace function public.mt5_acquire_sync_lease(
    p_account_id uuid, p_holder uuid, p_ttl_seconds integer
) returns boolean
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
as $$
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
    -- One statement: the row lock makes check-and-set atomic. Re-acquiring by the same holder
    -- extends the lease. updated_at is not touched: a lease is bookkeeping, not account data.
    update public.trading_accounts
       set sync_lease_holder = p_holder,
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

create or replace function public.mt5_release_sync_lease(
    p_account_id uuid, p_holder uuid
) returns void
language sql
volatile
security invoker
set search_path = public, pg_temp
as $$
    update public.trading_accounts
       set sync_lease_holder = null,
           sync_lease_until = null
     where id = p_account_id
       and sync_lease_holder = p_holder;
$$;

-- ---------------------------------------------------------------- sync start

-- Upserts the 'processing' log row of a sync; never touches a row that already has a final status
-- (a late or repeated "started" call must not reopen a finished sync).
create or replace function public.mt5_mark_sync_started(p jsonb) returns void
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
declare
    fn constant text := 'mt5_mark_sync_started';
    v_sync_id uuid := public.mt5_payload_uuid(p, fn, 'sync_id');
    v_account_id uuid := public.mt5_payload_uuid(p, fn, 'account_id');
    v_execution_id uuid := public.mt5_payload_uuid(p, fn, 'execution_id', false);
    v_flow_run_id uuid := public.mt5_payload_uuid(p, fn, 'flow_run_id', false);
    v_trigger text := public.mt5_payload_choice(p, fn, 'trigger', array['scheduled', 'manual', 'backfill']);
    v_sync_type text := public.mt5_payload_choice(p, fn, 'sync_type', array['full', 'incremental']);
    v_started timestamptz := public.mt5_payload_timestamptz(p, fn, 'started_at');
begin
    if not exists (select 1 from public.trading_accounts where id = v_account_id) then
        raise exception '%: unknown account_id %', fn, v_account_id
            using errcode = 'foreign_key_violation';
    end if;

    insert into public.sync_logs as l
        (sync_id, account_id, execution_id, flow_run_id, trigger, sync_type, status,
         started_at, created_at)
    values
        (v_sync_id, v_account_id, v_execution_id, v_flow_run_id, v_trigger, v_sync_type,
         'processing', v_started, v_started)
    on conflict (sync_id) do update
       set account_id = excluded.account_id,
           execution_id = excluded.execution_id,
           flow_run_id = excluded.flow_run_id,
           trigger = excluded.trigger,
           sync_type = excluded.sync_type,
           started_at = excluded.started_at
     where l.status = 'processing'
       and (l.account_id, l.execution_id, l.flow_run_id, l.trigger, l.sync_type, l.started_at)
           is distinct from
           (excluded.account_id, excluded.execution_id, excluded.flow_run_id, excluded.trigger,
            excluded.sync_type, excluded.started_at);
end
$$;

-- ---------------------------------------------------------------- the commit

-- Everything one successful (or partially successful) account sync writes, in ONE transaction:
--  (a) account balances/currency/leverage/margin mode, when p.account is not null;
--  (b) deals, upserted on (account_id, ticket) -- deals change after the fact (BUY -> BUY_CANCELED);
--  (c) cash flows, upserted on (account_id, deal_ticket);
--  (d) trades (closed_trades + open_positions), upserted on (account_id, ticket). Rule: last write
--      wins, except that a trade stored as 'closed' is never turned back to 'open' (a position id
--      never reopens in MT5, so an 'open' row for a closed ticket can only come from an older
--      fetch). Within one payload a ticket present in both lists keeps its closed row;
--  (e) the account snapshot, upserted on (account_id, taken_at);
--  (f) quarantined records, once per (sync_id, kind, ordinal);
--  (g) history_cursor := p.history_cursor when given and later than the stored one (never back);
--  (h) sync bookkeeping: last_sync_at (never backwards); on 'success' last_successful_sync_at,
--      sync_failure_count = 0, last_connection_error = null; on 'partial' last_connection_error =
--      p.error_message and the failure count unchanged;
--  (i) the sync_logs row of p.sync_id (counts are the payload's, so a replay writes the same row);
--  (j) the sync lease, released if p.lease_holder holds it.
-- Any error aborts the whole call: nothing is written, the cursor does not move.
-- Upserts write only rows whose values change, stamping updated_at with p.completed_at.
create or replace function public.mt5_commit_account_sync(p jsonb) returns jsonb
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
declare
    fn constant text := 'mt5_commit_account_sync';
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
    v_n_quarantine integer;
    v_open_positions jsonb;
    v_old public.trading_accounts%rowtype;
    v_new public.trading_accounts%rowtype;
    v_login bigint;
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
    v_n_deals := public.mt5_payload_array_length(p, fn, 'deals');
    v_n_cash := public.mt5_payload_array_length(p, fn, 'cash_flows');
    v_n_closed := public.mt5_payload_array_length(p, fn, 'closed_trades');
    v_n_open := public.mt5_payload_array_length(p, fn, 'open_positions', true);
    -- JSON null (not fetched) and an empty list both write no open positions.
    v_open_positions := case when v_n_open is null then '[]'::jsonb else p -> 'open_positions' end;
    v_n_quarantine := public.mt5_payload_array_length(p, fn, 'quarantine');
    begin
        v_duration_ms := public.mt5_payload_text(p, fn, 'duration_ms', false)::integer;
    exception when invalid_text_representation or numeric_value_out_of_range then
        raise exception '%: payload field "duration_ms" must be an integer', fn
            using errcode = 'invalid_parameter_value';
    end;
    if exists (select 1 from jsonb_array_elements(p -> 'closed_trades') e
                where e ->> 'status' is distinct from 'closed') then
        raise exception '%: every row of "closed_trades" must have status "closed"', fn
            using errcode = 'invalid_parameter_value';
    end if;
    if exists (select 1 from jsonb_array_elements(v_open_positions) e
                where e ->> 'status' is distinct from 'open') then
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
      from jsonb_array_elements(p -> 'deals') with ordinality as e(j, ord)
     cross join lateral jsonb_to_record(e.j) as x(
           ticket bigint, order_ticket bigint, position_id bigint, time_utc timestamptz,
           time_server bigint, time_msc_server bigint, type integer, entry integer,
           magic bigint, reason integer, volume numeric(28, 8), price numeric(28, 8),
           commission numeric(28, 8), swap numeric(28, 8), profit numeric(28, 8),
           fee numeric(28, 8), symbol text, comment text, external_id text)
     order by x.ticket, e.ord desc   -- a ticket sent twice: the last occurrence wins
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
      from jsonb_array_elements(p -> 'cash_flows') with ordinality as e(j, ord)
     cross join lateral jsonb_to_record(e.j) as x(
           deal_ticket bigint, type integer, kind text, amount numeric(28, 8),
           time_utc timestamptz, time_server bigint, comment text)
     order by x.deal_ticket, e.ord desc
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
            select j, ord, 1 as closed_first
              from jsonb_array_elements(p -> 'closed_trades') with ordinality as e(j, ord)
            union all
            select j, ord, 0
              from jsonb_array_elements(v_open_positions)
                   with ordinality as e(j, ord)
           ) as e
     cross join lateral jsonb_to_record(e.j) as x(
           ticket bigint, symbol text, side text, status text, volume numeric(28, 8),
           open_price numeric(28, 8), open_time_utc timestamptz, open_time_server bigint,
           close_price numeric(28, 8), close_time_utc timestamptz, close_time_server bigint,
           stop_loss numeric(28, 8), take_profit numeric(28, 8), current_price numeric(28, 8),
           profit numeric(28, 8), swap numeric(28, 8), commission numeric(28, 8),
           fee numeric(28, 8), net_profit numeric(28, 8), magic bigint, comment text,
           deal_count integer)
     order by x.ticket, e.closed_first desc, e.ord desc
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
             'history_cursor', v_cursor),
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
        'cursor', v_new.history_cursor);
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

-- ---------------------------------------------------------------- the failure record

-- Written when the commit did not happen (it raised and rolled back, or never ran), in its own
-- small transaction. Once per sync_id: if the log row of p.sync_id already has a final outcome
-- ('failed', or 'success'/'partial' because the commit did land before its reply was lost), the
-- counters are left alone -- a retried failure report must not count twice, and a failure
-- report must not overwrite a committed sync. The lease of p.lease_holder is released either way.
create or replace function public.mt5_record_sync_failure(p jsonb) returns void
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
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

-- ---------------------------------------------------------------- privileges
-- Only the backend (service_role, or the owner over a direct connection) may call these; RLS
-- policies for app users come in a later migration. Supabase's default privileges grant EXECUTE
-- on new public functions to anon and authenticated, so revoke from them explicitly.
do $grants$
declare
    v_fn text;
begin
    foreach v_fn in array array[
        'public.mt5_payload_text(jsonb, text, text, boolean)',
        'public.mt5_payload_uuid(jsonb, text, text, boolean)',
        'public.mt5_payload_timestamptz(jsonb, text, text, boolean)',
        'public.mt5_payload_choice(jsonb, text, text, text[])',
        'public.mt5_payload_array_length(jsonb, text, text, boolean)',
        'public.mt5_payload_object(jsonb, text, text)',
        'public.mt5_acquire_sync_lease(uuid, uuid, integer)',
        'public.mt5_release_sync_lease(uuid, uuid)',
        'public.mt5_mark_sync_started(jsonb)',
        'public.mt5_commit_account_sync(jsonb)',
        'public.mt5_record_sync_failure(jsonb)'
    ] loop
        execute format('revoke all on function %s from public, anon, authenticated', v_fn);
        execute format('grant execute on function %s to service_role', v_fn);
    end loop;
end
$grants$;
