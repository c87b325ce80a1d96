-- Manual "sync now": the rate-limit slot, the 'processing' log row, and giving both back.
--
-- Why database functions: several API replicas (and many concurrent requests) must agree on
-- "at most one manual sync per account per window". The decision is ONE conditional UPDATE on
-- trading_accounts: the row lock serializes concurrent claimers and each re-checks the window
-- on the latest row version, so exactly one wins -- no advisory lock, no Redis. Ownership
-- (user_id, is_active) is part of the same WHERE, so there is no check-then-act gap either.
-- Only when no row was updated does a second read tell "not yours / unknown / inactive" (404)
-- from "too soon" (429); that read decides nothing, it only explains.
--
-- The claim also writes the sync's 'processing' sync_logs row (trigger 'manual') in the same
-- transaction: a slot is taken if and only if its row exists. What to restore if the
-- orchestrator cannot be reached is kept in that row's details, so the release needs only
-- the sync_id (the API keeps no state between the two calls).
--
-- Core PostgreSQL only (15+): no RETURNING OLD (PG18), hence the self-join for the previous
-- value.

create or replace function public.mt5_claim_manual_sync(
    p_account_id uuid,
    p_user_id uuid,
    p_sync_id uuid,
    p_sync_type text,
    p_window_seconds integer,
    p_default_estimate_seconds integer default 30
) returns table (
    outcome text,
    retry_after_seconds integer,
    estimated_duration_seconds integer,
    account_label text
)
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
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

-- Give a claim back: the orchestrator never got the run, so the user must be able to retry
-- at once. Restores last_manual_sync_at only if it is still this claim's (a later claim is
-- never undone) and removes the 'processing' row only while nothing has written an outcome
-- into it. Returns whether the slot was given back. Idempotent.
create or replace function public.mt5_release_manual_sync(p_sync_id uuid) returns boolean
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
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

do $grants$
declare
    v_fn text;
begin
    foreach v_fn in array array[
        'public.mt5_claim_manual_sync(uuid, uuid, uuid, text, integer, integer)',
        'public.mt5_release_manual_sync(uuid)'
    ] loop
        execute format('revoke all on function %s from public, anon, authenticated', v_fn);
        execute format('grant execute on function %s to service_role', v_fn);
    end loop;
end
$grants$;
