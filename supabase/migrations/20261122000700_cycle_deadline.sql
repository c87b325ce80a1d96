-- A cycle that knows its deadline: duration estimates in, deferred accounts out.
--
-- The scheduled cycle (flows/sync_trading_data.py) stops starting accounts it cannot finish
-- within its budget. It needs, once per cycle, each account's recent sync durations, and it
-- reports the accounts it did not start as 'deferred' (a status the core schema already
-- allows). Nothing else writes 'deferred'.
--
-- A deferred row touches no account column: last_sync_at in particular stays where it was, so
-- the least-recently-synced-first order of the next cycle (trading_accounts_active_sync_idx)
-- puts deferred accounts at the head of the queue. sync_failure_count is not incremented: a
-- deferral is not a failure.

-- Median duration_ms of each account's last p_last finished syncs (success, partial, failed).
-- p_account_ids null = every active account. Accounts without a finished sync are absent.
create or replace function public.mt5_sync_duration_estimates(
    p_account_ids uuid[] default null, p_last integer default 5
) returns table (account_id uuid, median_ms integer, samples integer)
language sql
stable
security invoker
set search_path = public, pg_temp
as $$
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

-- Record the accounts a cycle did not start, one 'deferred' sync_logs row each, in one call:
--   p = {"execution_id", "flow_run_id", "trigger", "sync_type", "deferred_at", "reason",
--        "syncs": [{"sync_id", "account_id", "estimate_ms", "message"}]}
-- Idempotent per sync_id (a replay, or a row that already has any status, is left alone;
-- a later sync with the same sync_id -- a retried cycle that does start the account -- turns
-- the row into its real outcome through the commit or failure function). Unknown accounts
-- are skipped. Returns the number of rows written.
create or replace function public.mt5_record_syncs_deferred(p jsonb) returns integer
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
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

do $grants$
declare
    v_fn text;
begin
    foreach v_fn in array array[
        'public.mt5_sync_duration_estimates(uuid[], integer)',
        'public.mt5_record_syncs_deferred(jsonb)'
    ] loop
        execute format('revoke all on function %s from public, anon, authenticated', v_fn);
        execute format('grant execute on function %s to service_role', v_fn);
    end loop;
end
$grants$;
