-- Core tables of mt5-sync.
--
-- Keys: MT5 tickets are unique per trade server, not globally, so every MT5-keyed table is
-- keyed (account_id, ticket) -- never ticket alone (the Edge Function's ON CONFLICT (ticket)
-- merged different accounts' trades).
-- Times: every timestamptz is true UTC; the raw trade-server epoch (server wall clock written as
-- epoch seconds) is kept beside it in *_server bigint columns, so a wrong server time rule can be
-- corrected later without re-fetching.
-- Money, prices and volumes: numeric(28,8) everywhere (exact, and it rounds away float noise such
-- as 0.30000000000000004, so re-sending the same values never looks like a change).
-- Writes come from the database functions of the next migration; created_at / updated_at are
-- taken from the sync payload there (not now()), so replaying a sync leaves rows byte-identical.

create table public.trading_accounts (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references auth.users (id) on delete cascade,
    login_number bigint not null,
    broker_name text,
    broker_server text not null,
    -- Encrypted by the application (never plaintext); decrypted only on the terminal host.
    investor_password_encrypted text not null,
    -- How the trade server's wall clock maps to UTC: 'utc', 'fixed:+2', 'ny+7' (see servertime.py).
    server_time_rule text not null default 'ny+7',
    is_active boolean not null default true,
    currency text,
    leverage integer,
    margin_mode text,
    balance numeric(28, 8),
    equity numeric(28, 8),
    margin numeric(28, 8),
    free_margin numeric(28, 8),
    margin_level numeric(28, 8),
    last_sync_at timestamptz,
    last_successful_sync_at timestamptz,
    sync_failure_count integer not null default 0,
    last_connection_error text,
    -- UTC. Deals before (history_cursor - overlap window) are known to be stored; moves only
    -- forward, and only in the same transaction as the rows it covers.
    history_cursor timestamptz,
    -- Cross-process mutual exclusion of syncs of one account (mt5_acquire_sync_lease).
    sync_lease_holder uuid,
    sync_lease_until timestamptz,
    -- Rate limit of the manual "sync now" endpoint.
    last_manual_sync_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint trading_accounts_server_login_user_key unique (broker_server, login_number, user_id),
    constraint trading_accounts_failure_count_check check (sync_failure_count >= 0)
);

create index trading_accounts_user_idx on public.trading_accounts (user_id);
create index trading_accounts_active_sync_idx
    on public.trading_accounts (last_sync_at nulls first, id) where is_active;

comment on table public.trading_accounts is 'MT5 accounts synced by mt5-sync; one row per (server, login, user).';

-- One row per MT5 position (ticket = position id): open positions and closed trades alike.
create table public.trades (
    id uuid not null default gen_random_uuid(),
    account_id uuid not null references public.trading_accounts (id) on delete cascade,
    ticket bigint not null,
    symbol text not null,
    side text not null,
    -- The Edge Function's column name for the side; always equal to side.
    type text generated always as (side) stored,
    status text not null,
    volume numeric(28, 8) not null,
    open_price numeric(28, 8) not null,
    open_time timestamptz not null,
    open_time_server bigint not null,
    close_price numeric(28, 8),
    close_time timestamptz,
    close_time_server bigint,
    stop_loss numeric(28, 8),
    take_profit numeric(28, 8),
    current_price numeric(28, 8),
    profit numeric(28, 8) not null,
    swap numeric(28, 8) not null,
    commission numeric(28, 8) not null,
    fee numeric(28, 8) not null,
    net_profit numeric(28, 8) not null,
    magic bigint not null,
    comment text not null,
    deal_count integer not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint trades_pkey primary key (id),
    constraint trades_account_ticket_key unique (account_id, ticket),
    constraint trades_side_check check (side in ('buy', 'sell')),
    constraint trades_status_check check (status in ('open', 'closed')),
    constraint trades_closed_has_close_time_check check (status = 'open' or close_time is not null)
);

create index trades_account_status_idx on public.trades (account_id, status);
create index trades_account_close_time_idx on public.trades (account_id, close_time desc);

-- The ledger: every MT5 deal, trade deals and balance operations alike.
create table public.deals (
    account_id uuid not null references public.trading_accounts (id) on delete cascade,
    ticket bigint not null,
    order_ticket bigint not null,
    position_id bigint not null,
    time timestamptz not null,
    time_server bigint not null,
    time_msc_server bigint not null,
    type integer not null,
    entry integer not null,
    magic bigint not null,
    reason integer not null,
    volume numeric(28, 8) not null,
    price numeric(28, 8) not null,
    commission numeric(28, 8) not null,
    swap numeric(28, 8) not null,
    profit numeric(28, 8) not null,
    fee numeric(28, 8) not null,
    symbol text not null,
    comment text not null,
    external_id text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint deals_pkey primary key (account_id, ticket)
);

create index deals_account_position_idx on public.deals (account_id, position_id);
create index deals_account_time_idx on public.deals (account_id, time);

-- Deposits, withdrawals, credit, charges, interest, ...: deals of types 2..12 and 15..17.
create table public.cash_flows (
    account_id uuid not null references public.trading_accounts (id) on delete cascade,
    deal_ticket bigint not null,
    type integer not null,
    kind text not null,
    amount numeric(28, 8) not null,
    time timestamptz not null,
    time_server bigint not null,
    comment text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint cash_flows_pkey primary key (account_id, deal_ticket)
);

create index cash_flows_account_time_idx on public.cash_flows (account_id, time);

create table public.account_snapshots (
    account_id uuid not null references public.trading_accounts (id) on delete cascade,
    taken_at timestamptz not null,
    balance numeric(28, 8) not null,
    equity numeric(28, 8) not null,
    margin numeric(28, 8) not null,
    free_margin numeric(28, 8) not null,
    margin_level numeric(28, 8),
    created_at timestamptz not null default now(),
    constraint account_snapshots_pkey primary key (account_id, taken_at)
);

-- One row per account sync attempt (sync_id), written 'processing' when it starts and given its
-- final status by the commit or the failure function.
create table public.sync_logs (
    id uuid primary key default gen_random_uuid(),
    sync_id uuid not null,
    account_id uuid not null references public.trading_accounts (id) on delete cascade,
    -- The parent cycle (the Edge Function's executionId); null for a lone manual sync.
    execution_id uuid,
    flow_run_id uuid,
    trigger text not null,
    sync_type text not null,
    status text not null,
    started_at timestamptz not null,
    completed_at timestamptz,
    duration_ms integer,
    trades_synced integer not null default 0,
    deals_synced integer not null default 0,
    error_code text,
    error_message text,
    details jsonb,
    created_at timestamptz not null default now(),
    constraint sync_logs_sync_id_key unique (sync_id),
    constraint sync_logs_trigger_check check (trigger in ('scheduled', 'manual', 'backfill')),
    constraint sync_logs_sync_type_check check (sync_type in ('full', 'incremental')),
    constraint sync_logs_status_check
        check (status in ('processing', 'success', 'partial', 'failed', 'deferred', 'skipped'))
);

create index sync_logs_account_started_idx on public.sync_logs (account_id, started_at desc);
create index sync_logs_started_idx on public.sync_logs (started_at);

-- MT5 records that failed validation: kept for inspection, never silently dropped. While a sync
-- quarantines records its history cursor does not advance, so they are fetched again.
create table public.sync_quarantine (
    sync_id uuid not null,
    kind text not null,
    ordinal integer not null,
    account_id uuid not null references public.trading_accounts (id) on delete cascade,
    ticket bigint,
    reasons text not null,
    record jsonb not null,
    created_at timestamptz not null default now(),
    constraint sync_quarantine_pkey primary key (sync_id, kind, ordinal)
);

create index sync_quarantine_account_idx on public.sync_quarantine (account_id, created_at);

-- Privileges. Row level security arrives in a later migration; until then the tables must not
-- be readable with the public anon key: Supabase's default privileges grant anon and
-- authenticated everything on new public tables, so take that back here.
revoke all on table
    public.trading_accounts, public.trades, public.deals, public.cash_flows,
    public.account_snapshots, public.sync_logs, public.sync_quarantine
from anon, authenticated;

grant select, insert, update, delete on table
    public.trading_accounts, public.trades, public.deals, public.cash_flows,
    public.account_snapshots, public.sync_logs, public.sync_quarantine
to service_role;
