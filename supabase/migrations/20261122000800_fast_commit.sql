-- Fast commit: row lists may travel column by column.
--
-- Measured (docs/benchmarks.md, "Commit throughput"): for a 2,000-deal payload most of the commit
-- was JSON work, not writing -- parsing the ~1 MiB jsonb argument (one object per row, every key
-- repeated per row) and pulling each row apart again with jsonb_to_record. So the commit now
-- also accepts each row list (deals, cash_flows, closed_trades, open_positions) in COLUMNAR form:
--
--     "deals": {"rows": 2, "columns": {"ticket": "{11,12}", "symbol": "{\"EURUSD\",\"GBPUSD\"}",
--               "price": [1.1, 1.2], ...}}
--
-- one value per column holding "rows" values (row i is element i of every column): a
-- PostgreSQL array literal in a JSON string (what mt5_sync.store.chunks.columnar sends) or a
-- JSON array. For the benchmark's 2,000-deal account that is 0.45 instead of 1.05 MiB, jsonb
-- parses it in ~1 instead of ~25 ms (it scans a few long strings instead of ~100,000 tokens),
-- each column becomes a typed array in one cast, and the rows come out of ONE
-- unnest(...) WITH ORDINALITY instead of a jsonb_to_record per row.
-- The row form (a JSON array of objects) is still accepted and is converted to columns here,
-- so old clients and the staged REST path keep working and both forms write identical rows.
-- Semantics are unchanged: same validation, same "last occurrence of a ticket wins", same
-- no-op-free upserts, same log row, cursor and quarantine; one transaction.

-- ---------------------------------------------------------------- column helpers
-- One column of a columnar row list -> a typed array. A column is either
--  * a JSON string holding a PostgreSQL array literal ('{1,2.5,NULL}', '{"EURUSD","x\\"y"}'):
--    what the clients send -- the jsonb parser only scans one string, and the cast is one C
--    call (array_in) for the whole column; or
--  * a JSON array of scalars: jsonb prints it as [1, 2.5, null, "x"], and with the brackets
--    turned into braces that is an array literal too (null -> NULL, quotes stripped). Used for
--    numbers and timestamps, whose text never needs JSON escapes (a value that does is not a
--    valid number or timestamp and fails the cast, as it did in jsonb_to_record); text columns
--    in this form go through jsonb_array_elements_text (exact JSON unescaping; an object or
--    array value gives its JSON text, as jsonb_to_record does).
-- A nested array would come out as a second dimension: refused; so is a column whose length is
-- not the part's "rows". A missing column gives a null array, which unnest pads with NULLs, as
-- jsonb_to_record does for a missing key.
-- The helpers are plpgsql, not SQL: a SQL function that cannot be inlined (a pinned search_path
-- prevents it) is planned again at every call site in every new session (and a client without
-- a pool, e.g. a REST call, gets a new session each time); plpgsql compiles once per session.
create or replace function public.mt5_col_check(a anyarray, k text, n integer) returns anyarray
language plpgsql immutable security invoker set search_path = public, pg_temp
as $$
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

-- The array-literal text of column k (either form), or null when absent.
create or replace function public.mt5_col_literal(c jsonb, k text) returns text
language plpgsql immutable security invoker set search_path = public, pg_temp
as $$
begin
    return case coalesce(jsonb_typeof(c -> k), 'null')
               when 'string' then c ->> k
               when 'array' then translate((c -> k)::text, '[]', '{}')
               when 'null' then null
               else '<column ' || k || ' must be a JSON array or an array literal>'
           end;
end
$$;

create or replace function public.mt5_col_bigint(c jsonb, k text, n integer) returns bigint[]
language plpgsql immutable security invoker set search_path = public, pg_temp
as $$ begin return mt5_col_check(mt5_col_literal(c, k)::bigint[], k, n); end $$;

create or replace function public.mt5_col_int(c jsonb, k text, n integer) returns integer[]
language plpgsql immutable security invoker set search_path = public, pg_temp
as $$ begin return mt5_col_check(mt5_col_literal(c, k)::integer[], k, n); end $$;

create or replace function public.mt5_col_numeric(c jsonb, k text, n integer) returns numeric[]
language plpgsql immutable security invoker set search_path = public, pg_temp
as $$ begin return mt5_col_check(mt5_col_literal(c, k)::numeric[], k, n); end $$;

create or replace function public.mt5_col_timestamptz(c jsonb, k text, n integer)
returns timestamptz[]
language plpgsql stable security invoker set search_path = public, pg_temp
as $$ begin return mt5_col_check(mt5_col_literal(c, k)::timestamptz[], k, n); end $$;

create or replace function public.mt5_col_text(c jsonb, k text, n integer) returns text[]
language plpgsql immutable security invoker set search_path = public, pg_temp
as $$
begin
    if jsonb_typeof(c -> k) = 'array' then
        return mt5_col_check(array(select e.v from jsonb_array_elements_text(c -> k)
                                                   with ordinality as e(v, o) order by e.o),
                             k, n);
    end if;
    return mt5_col_check(mt5_col_literal(c, k)::text[], k, n);
end
$$;

-- A trade row list (closed trades or open positions: the same columns) as typed rows, with
-- each row's position (ord) in its list.
create or replace function public.mt5_trade_columns(c jsonb, n integer)
returns table(
    ticket bigint, symbol text, side text, status text, volume numeric, open_price numeric,
    open_time_utc timestamptz, open_time_server bigint, close_price numeric,
    close_time_utc timestamptz, close_time_server bigint, stop_loss numeric,
    take_profit numeric, current_price numeric, profit numeric, swap numeric,
    commission numeric, fee numeric, net_profit numeric, magic bigint, comment text,
    deal_count integer, ord bigint)
language plpgsql immutable security invoker set search_path = public, pg_temp
as $$
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

-- p.key as columns {"<column>": [...], ...}: accepts the row form (a JSON array of objects,
-- converted here, key order = cols) or {"columns": {...}} (every value a JSON array, all of one
-- length). Returns null when absent/null and nullable; raises a message naming the
-- field otherwise.
create or replace function public.mt5_payload_columns(
    p jsonb, fn text, key text, cols text[], nullable boolean default false
) returns jsonb
language plpgsql
immutable
security invoker
set search_path = public, pg_temp
as $$
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

-- ---------------------------------------------------------------- the commit
create or replace function public.mt5_commit_account_sync(p jsonb) returns jsonb
language plpgsql
volatile
security invoker
set search_path = public, pg_temp
set "TimeZone" = 'UTC'
as $$
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

-- The staged REST path reassembles row lists and calls the function above: nothing to change.
revoke all on function public.mt5_commit_account_sync(jsonb) from public, anon, authenticated;
grant execute on function public.mt5_commit_account_sync(jsonb) to service_role;

do $grants$
declare
    v_fn text;
begin
    foreach v_fn in array array[
        'public.mt5_col_check(anyarray, text, integer)',
        'public.mt5_col_literal(jsonb, text)',
        'public.mt5_col_bigint(jsonb, text, integer)',
        'public.mt5_col_int(jsonb, text, integer)',
        'public.mt5_col_numeric(jsonb, text, integer)',
        'public.mt5_col_timestamptz(jsonb, text, integer)',
        'public.mt5_col_text(jsonb, text, integer)',
        'public.mt5_trade_columns(jsonb, integer)',
        'public.mt5_payload_columns(jsonb, text, text, text[], boolean)'
    ] loop
        execute format('revoke all on function %s from public, anon, authenticated', v_fn);
        execute format('grant execute on function %s to service_role', v_fn);
    end loop;
end
$grants$;
