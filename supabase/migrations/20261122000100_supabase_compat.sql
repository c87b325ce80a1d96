-- Supabase compatibility layer.
--
-- On a Supabase project every object below already exists (roles, the auth schema, auth.users,
-- auth.uid(), auth.role()) and this file changes nothing: each object is created only when it
-- is missing, and Supabase's own functions are never replaced. On plain PostgreSQL (tests, the
-- local demo, a self-hosted database) it stubs just enough of Supabase for the later migrations
-- (foreign keys to auth.users, grants to service_role, RLS policies using auth.uid()) to apply
-- unchanged. Core PostgreSQL only: no extensions.

-- Roles are cluster-wide: two databases of one cluster migrating at the same time can race on
-- CREATE ROLE, hence the exception handlers (a concurrent creation surfaces as unique_violation).
do $compat$
declare
    v_role text;
    v_superuser boolean;
begin
    select rolsuper into v_superuser from pg_roles where rolname = current_user;
    foreach v_role in array array['anon', 'authenticated', 'service_role'] loop
        if not exists (select 1 from pg_roles where rolname = v_role) then
            begin
                -- Supabase's service_role bypasses RLS; only a superuser may grant BYPASSRLS.
                if v_role = 'service_role' and v_superuser then
                    execute format('create role %I nologin noinherit bypassrls', v_role);
                else
                    execute format('create role %I nologin noinherit', v_role);
                end if;
            exception when duplicate_object or unique_violation then
                null;
            end;
        end if;
    end loop;
end
$compat$;

do $compat$
begin
    if not exists (select 1 from pg_namespace where nspname = 'auth') then
        create schema auth;
        grant usage on schema auth to anon, authenticated, service_role;
    end if;

    if to_regclass('auth.users') is null then
        create table auth.users (
            id uuid primary key,
            email text
        );
        comment on table auth.users is
            'Stub of Supabase''s auth.users for plain PostgreSQL (mt5-sync compat migration).';
    end if;

    -- Same semantics as Supabase's: the JWT subject, from either GUC style PostgREST has used.
    if to_regprocedure('auth.uid()') is null then
        create function auth.uid() returns uuid
        language sql stable
        as $fn$
            select coalesce(
                nullif(current_setting('request.jwt.claim.sub', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
            )::uuid
        $fn$;
        grant execute on function auth.uid() to anon, authenticated, service_role;
    end if;

    if to_regprocedure('auth.role()') is null then
        create function auth.role() returns text
        language sql stable
        as $fn$
            select coalesce(
                nullif(current_setting('request.jwt.claim.role', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
            )::text
        $fn$;
        grant execute on function auth.role() to anon, authenticated, service_role;
    end if;
end
$compat$;
