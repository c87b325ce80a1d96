-- One cycle across many hosts: a claim queue per cycle, short renewed leases, abandoned syncs.
--
-- The scheduled cycle (execution_id) opens a sync_cycles row naming its account set; every
-- host's shard then CLAIMS accounts from it, a few at a time, as its terminals free up
-- (least recently synced first, FOR UPDATE SKIP LOCKED: two shards never take one account, and
-- never wait on each other). Claiming takes the account's sync lease in the same statement.
--
-- Leases are short (MT5SYNC_LEASE_TTL_S, default 30 s) and renewed by their holder's process
-- every third of that (mt5_renew_sync_leases): a host that dies stops renewing, and within one
-- TTL its accounts are free again -- claimable by another shard of the same cycle, or by the
-- next cycle. A holder whose flow run Prefect reports final can be broken at once
-- (mt5_break_sync_lease). An account whose lease a LIVE holder has (a manual sync) is not waited
-- for: the claim records it 'skipped' for this cycle, and it stays at the head of the queue.
--
-- A 'processing' sync_logs row whose sync held a lease (sync_logs.lease_holder) and died is
-- closed as failed / 'abandoned' when the account's next sync starts (mt5_mark_sync_started).
-- Rows without a lease holder (the manual-sync API's row, written at request time before its
-- flow run holds the lease) are left alone: their run is still coming.

alter table public.trading_accounts
    add column sync_lease_flow_run_id uuid;

comment on column public.trading_accounts.sync_lease_flow_run_id is
    'Prefect flow run of the lease holder (set when its sync starts): lets a claimer ask Prefect '
    'whether the holder is still alive.';

create index trading_accounts_lease_holder_idx
    on public.trading_accounts (sync_lease_holder) where sync_lease_holder is not null;

alter table public.sync_logs
    add column lease_holder uuid;

comment on column public.sync_logs.lease_holder is
    'The lease this sync held while it ran; null until it held one (a manual request not yet '
    'started). A processing row with a holder that is not the account''s live lease is abandoned.';

create table public.sync_cycles (
    execution_id uuid primary key,
    trigger text not null,
    sync_type text not null,
    -- null: every active account at claim time (an account added mid-cycle is claimable)
    account_ids uuid[],
    -- never claimable in this cycle: accounts backing off (mt5_sync/sync/health.py), few
    excluded_ids uuid[],
    opened_at timestamptz not null default now(),
    constraint sync_cycles_trigger_check check (trigger in ('scheduled', 'manual', 'backfill'))
);

create table public.sync_cycle_claims (
    execution_id uuid not null references public.sync_cycles (execution_id) on delete cascade,
    account_id uuid not null references public.trading_accounts (id) on delete cascade,
    host text not null,
    lease_holder uuid not null,
    -- claimed: a shard works on it; skipped: a live holder had its lease; deferred: the
    -- shard's deadline planner gave it back
    outcome text not null,
    claimed_at timestamptz not null default now(),
    -- how many times the account was claimed in this cycle (> 1: a dead host's claim taken over)
    claims integer not null default 1,
    constraint sync_cycle_claims_pkey primary key (execution_id, account_id),
    constraint sync_cycle_claims_outcome_check
        check (outcome in ('claimed', 'skipped', 'deferred'))
);

-- One row per host that ran a shard of the cycle: what it reports to the parent, which merges.
create table public.sync_cycle_shards (
    execution_id uuid not null references public.sync_cycles (execution_id) on delete cascade,
    host text not null,
    flow_run_id uuid,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    summary jsonb,
    constraint sync_cycle_shards_pkey primary key (execution_id, host)
);

create index sync_logs_execution_idx on public.sync_logs (execution_id, account_id)
    where execution_id is not null;

-- ---------------------------------------------------------------- the cycle

create or replace function public.mt5_open_sync_cycle(
    p_execution_id uuid, p_trigger text, p_sync_type text, p_account_ids uuid[],
    p_excluded_ids uuid[] default null
) returns void
language sql
volatile
security invoker
set search_path = public, pg_temp
as $$
    -- A retried parent reopens its own cycle: idempotent.
    insert into public.sync_cycles (execution_id, trigger, sync_type, account_ids, excluded_ids)
    values (p_execution_id, p_trigger, p_sync_type, p_account_ids, p_excluded_ids)
    on conflict (execution_id) do nothing;
$$;

-- Claim up to p_limit accounts of the cycle for p_host. Returns one row per account decided:
--   outcome 'claimed': the lease is now p_host's (lease_holder), the shard syncs it;
--   outcome 'skipped': a live holder has its lease (a manual sync); a 'skipped' sync_logs row
--                      says so, and the account is not offered again in this cycle.
-- Claimable: active, in the cycle's set, and either not yet decided in this cycle, or claimed by
-- a holder that died (its lease lapsed, no final sync_logs row of this cycle): taken over.
-- p_estimate_syncs > 0: each claimed row also carries the median duration (ms) of the account's
-- last that many finished syncs (mt5_sync_duration_estimates), for the shard's deadline planner:
-- one round trip per claim, not two.
create or replace function public.mt5_claim_cycle_accounts(
    p_execution_id uuid, p_host text, p_limit integer, p_lease_seconds integer,
    p_flow_run_id uuid default null, p_estimate_syncs integer default 0
) returns table (
    account_id uuid, login_number bigint, broker_server text, outcome text,
    lease_holder uuid, claims integer, detail text, median_ms integer
)
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
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

-- The shard's deadline planner gives a claimed account back: it is deferred in this cycle.
create or replace function public.mt5_unclaim_cycle_accounts(
    p_execution_id uuid, p_account_ids uuid[], p_outcome text
) returns void
language sql
volatile
security invoker
set search_path = public, pg_temp
as $$
    update public.trading_accounts as a
       set sync_lease_holder = null, sync_lease_until = null, sync_lease_flow_run_id = null
      from public.sync_cycle_claims as c
     where c.execution_id = p_execution_id and c.account_id = a.id
       and a.id = any (p_account_ids) and a.sync_lease_holder = c.lease_holder;
    update public.sync_cycle_claims
       set outcome = p_outcome
     where execution_id = p_execution_id and account_id = any (p_account_ids);
$$;

create or replace function public.mt5_record_cycle_shard(
    p_execution_id uuid, p_host text, p_flow_run_id uuid, p_summary jsonb
) returns void
language sql
volatile
security invoker
set search_path = public, pg_temp
as $$
    insert into public.sync_cycle_shards as s
        (execution_id, host, flow_run_id, finished_at, summary)
    values (p_execution_id, p_host, p_flow_run_id,
            case when p_summary is null then null else now() end, p_summary)
    on conflict on constraint sync_cycle_shards_pkey do update
       set flow_run_id = coalesce(excluded.flow_run_id, s.flow_run_id),
           finished_at = excluded.finished_at,
           summary = excluded.summary;
$$;


-- What the parent merges: every shard's report, every claim, and the cycle's sync_logs rows
-- (so an account whose shard died is still reported from what reached the database).
create or replace function public.mt5_cycle_report(p_execution_id uuid) returns jsonb
language sql
stable
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
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

-- ---------------------------------------------------------------- leases

-- As before (20261122000300), plus: a new holder's lease starts without a flow run (it is set
-- when its sync starts). A holder's flow run must never outlive its lease: a later holder would
-- otherwise inherit a finished run and its lease be broken as "held by a run that is over".
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
           sync_lease_until = null,
           sync_lease_flow_run_id = null
     where id = p_account_id
       and sync_lease_holder = p_holder;
$$;

-- Extend every listed lease its holder still has; returns the holders that still hold one (a
-- holder missing from the result lost its lease: it lapsed and someone took the account over).
create or replace function public.mt5_renew_sync_leases(
    p_holders uuid[], p_ttl_seconds integer
) returns setof uuid
language sql
volatile
security invoker
set search_path = public, pg_temp
as $$
    update public.trading_accounts
       set sync_lease_until = now() + make_interval(secs => p_ttl_seconds)
     where sync_lease_holder = any (p_holders)
       and p_ttl_seconds > 0
    returning sync_lease_holder;
$$;

-- Break a lease whose holder is known dead (Prefect reports its flow run final), if that holder
-- still has it. True when broken.
create or replace function public.mt5_break_sync_lease(
    p_account_id uuid, p_holder uuid
) returns boolean
language sql
volatile
security invoker
set search_path = public, pg_temp
as $$
    with broken as (
        update public.trading_accounts
           set sync_lease_holder = null, sync_lease_until = null, sync_lease_flow_run_id = null
         where id = p_account_id and sync_lease_holder = p_holder
        returning 1
    )
    select exists (select 1 from broken);
$$;

-- The account's lease holder and its flow run, for a claimer deciding whether to wait.
create or replace function public.mt5_sync_lease_of(p_account_id uuid)
returns table (holder uuid, until timestamptz, flow_run_id uuid, live boolean)
language sql
stable
security invoker
set search_path = public, pg_temp
as $$
    select sync_lease_holder, sync_lease_until, sync_lease_flow_run_id,
           sync_lease_holder is not null and sync_lease_until >= now()
      from public.trading_accounts where id = p_account_id;
$$;

-- ---------------------------------------------------------------- sync start
-- As before (20261122000300), plus: the row records the lease it runs under, the account's
-- lease records the holder's flow run, and the account's other 'processing' rows whose sync
-- held a lease are closed as abandoned (we hold the lease now, so their holder lost it).
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

-- ---------------------------------------------------------------- privileges and RLS
do $grants$
declare
    v_fn text;
    v_table text;
begin
    foreach v_fn in array array[
        'public.mt5_open_sync_cycle(uuid, text, text, uuid[], uuid[])',
        'public.mt5_claim_cycle_accounts(uuid, text, integer, integer, uuid, integer)',
        'public.mt5_unclaim_cycle_accounts(uuid, uuid[], text)',
        'public.mt5_record_cycle_shard(uuid, text, uuid, jsonb)',
        'public.mt5_cycle_report(uuid)',
        'public.mt5_renew_sync_leases(uuid[], integer)',
        'public.mt5_break_sync_lease(uuid, uuid)',
        'public.mt5_sync_lease_of(uuid)',
        'public.mt5_mark_sync_started(jsonb)',
        'public.mt5_acquire_sync_lease(uuid, uuid, integer)',
        'public.mt5_release_sync_lease(uuid, uuid)'
    ] loop
        execute format('revoke all on function %s from public, anon, authenticated', v_fn);
        execute format('grant execute on function %s to service_role', v_fn);
    end loop;
    -- Backend bookkeeping: service_role only, never app users.
    foreach v_table in array array['sync_cycles', 'sync_cycle_claims', 'sync_cycle_shards'] loop
        execute format('alter table public.%I enable row level security', v_table);
        execute format('revoke all on table public.%I from anon, authenticated', v_table);
        execute format('grant select, insert, update, delete on table public.%I to service_role',
                       v_table);
        execute format(
            'create policy %I on public.%I for all to service_role using (true) with check (true)',
            v_table || '_service_role_all', v_table);
    end loop;
end
$grants$;

-- ---------------------------------------------------------------- realtime
-- trading_accounts is published with a column list (everything but the credential,
-- 20261130000100_realtime.sql): publish the new column too, where that publication exists.
do $realtime$
begin
    if exists (
        select 1 from pg_publication_rel r join pg_publication p on p.oid = r.prpubid
         where p.pubname = 'supabase_realtime'
           and r.prrelid = 'public.trading_accounts'::regclass
    ) then
        alter publication supabase_realtime drop table public.trading_accounts;
        alter publication supabase_realtime add table public.trading_accounts (
            id, user_id, login_number, broker_name, broker_server, server_time_rule, is_active,
            currency, leverage, margin_mode, balance, equity, margin, free_margin, margin_level,
            last_sync_at, last_successful_sync_at, sync_failure_count, last_connection_error,
            history_cursor, sync_lease_holder, sync_lease_until, sync_lease_flow_run_id,
            last_manual_sync_at, created_at, updated_at
        );
    end if;
end
$realtime$;
