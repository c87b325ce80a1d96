-- Account lifecycle on the API (issue 14, parts 1-2): connect + verify, replace the
-- credentials + verify, deactivate; and the verify sync's outcome.
--
-- A *verify* sync is a sync_logs row with sync_type 'verify': the terminal logs in, checks
-- that it holds the login/server asked for and reads account_info -- no positions, no
-- history. It writes no trading data, so it never goes through mt5_commit_account_sync /
-- mt5_record_sync_failure (those own the data path and the failure counters): its
-- 'processing' row is written here, with the account, in one transaction, and its outcome by
-- mt5_finish_verify_sync. The API reports the account's connection status from that row.
--
-- Passwords arrive already sealed to the terminal hosts' public key (mt5_sync/credentials.py):
-- nothing here can read them.

alter table public.sync_logs drop constraint sync_logs_sync_type_check;
alter table public.sync_logs add constraint sync_logs_sync_type_check
    check (sync_type in ('full', 'incremental', 'verify'));

create index if not exists sync_logs_verify_account_idx
    on public.sync_logs (account_id, created_at desc) where sync_type = 'verify';

-- Connect: create the account (or re-activate the caller's deactivated one with the same
-- server + login: its history is kept and joins again) and write the verify sync's
-- 'processing' row. outcome: 'created' | 'reactivated' | 'duplicate' (an active account of
-- this user has that server + login: nothing is written).
create or replace function public.mt5_connect_account(
    p_user_id uuid,
    p_login_number bigint,
    p_broker_server text,
    p_password_encrypted text,
    p_server_time_rule text,
    p_sync_id uuid
) returns table (outcome text, account_id uuid, account_label text)
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
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

-- Replace the password of the caller's active account and write a new verify sync's
-- 'processing' row. At most one verify per account per p_window_seconds (the manual-sync
-- window): every verify is a login at the broker, and brokers throttle or block the source IP
-- after repeated failed logins (DESIGN.md), so a user retyping passwords in a loop must not
-- turn into a login loop. A verify that never started (orchestrator_unavailable) does not
-- count. The account row is locked first, so concurrent requests decide one after the other.
-- outcome: 'replaced' | 'rate_limited' (retry_after_seconds) | 'not_found' (unknown, inactive
-- or not theirs). Nothing is written unless 'replaced'.
create or replace function public.mt5_replace_account_credentials(
    p_account_id uuid,
    p_user_id uuid,
    p_password_encrypted text,
    p_sync_id uuid,
    p_window_seconds integer
) returns table (outcome text, account_label text, retry_after_seconds integer)
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
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

-- Deactivate the caller's account: it leaves every cycle (list_active_accounts reads
-- is_active), its data and sync history stay. Returns whether an active account was found.
create or replace function public.mt5_deactivate_account(p_account_id uuid, p_user_id uuid)
returns boolean
language sql
volatile
security invoker
set search_path = public, pg_temp
as $$
    with changed as (
        update public.trading_accounts as a
           set is_active = false, updated_at = now()
         where a.id = p_account_id and a.user_id = p_user_id and a.is_active
        returning 1
    )
    select exists (select 1 from changed);
$$;

-- The verify sync's outcome.
--   p = {"sync_id", "status": "success"|"failed", "completed_at", "duration_ms",
--        "error_code", "error_message", "flow_run_id", "details": {...}}
-- Only a row still 'processing' is written (a replay changes nothing). On success the
-- account's broker name, currency and leverage are taken from account_info. Returns whether
-- the row was written. The duration goes to details.duration_ms, and sync_logs.duration_ms
-- stays null: the duration estimates (mt5_sync_duration_estimates, the manual-sync claim's
-- median) read that column, and a login-only verify would make a new account's first full
-- sync look seconds long to the cycle's deadline planner.
create or replace function public.mt5_finish_verify_sync(p jsonb) returns boolean
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
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

do $grants$
declare
    v_fn text;
begin
    foreach v_fn in array array[
        'public.mt5_connect_account(uuid, bigint, text, text, text, uuid)',
        'public.mt5_replace_account_credentials(uuid, uuid, text, uuid, integer)',
        'public.mt5_deactivate_account(uuid, uuid)',
        'public.mt5_finish_verify_sync(jsonb)'
    ] loop
        execute format('revoke all on function %s from public, anon, authenticated', v_fn);
        execute format('grant execute on function %s to service_role', v_fn);
    end loop;
end
$grants$;
