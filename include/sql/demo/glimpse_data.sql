-- Glimpse demo database: deterministic data load.
--
-- Run once, after glimpse_schema.sql, on empty tables:
--
--   psql -v ON_ERROR_STOP=1 -v users=20000 -f glimpse_data.sql
--
-- `users` scales everything (default 20000, minimum 64). Per user there is
-- one profile and one preference row, ~10 outgoing likes (plus the return
-- like of each match), ~3 matches (~1.5 match rows, each shared by two
-- users), ~15 messages per match and ~1.5 group memberships.
--
-- Determinism: the same `users` value always produces byte-identical
-- table contents, so backups and restores can be compared by digest.
-- There is no random() and no now(): every "random" choice is a hash of
-- a label plus the row's series number, and every timestamp is offset
-- from the fixed epoch below. md5() is used rather than hashtext()
-- because its output is specified and does not depend on the server
-- version or platform.
--
-- Everything runs in one transaction: a failure leaves the tables empty.

\set ON_ERROR_STOP on

\if :{?users}
\else
  \set users 20000
\endif

-- All timestamps lie before this instant (the "today" of the demo data).
\set epoch '2026-01-01 00:00:00+00'

-- Fail early, with a clear message, on a bad scale or a non-empty database
-- (rather than part-way through with a duplicate-key error).
SET glimpse.users = :'users';
DO $$
BEGIN
    IF current_setting('glimpse.users')::bigint < 64 THEN
        RAISE EXCEPTION 'glimpse_data.sql: users must be >= 64, got %',
            current_setting('glimpse.users');
    END IF;
    IF EXISTS (SELECT FROM public.users) THEN
        RAISE EXCEPTION 'glimpse_data.sql: public.users is not empty; load into a fresh schema';
    END IF;
END
$$;

BEGIN;

-- timestamptz + interval depends on the session time zone (DST); pin it so
-- the data does not depend on the client's settings.
SET LOCAL TimeZone = 'UTC';
-- The window sorts below are a few hundred thousand rows; keep them in memory.
SET LOCAL work_mem = '64MB';

-- Helpers are session-local (pg_temp), so nothing is left behind in the
-- database or its dumps, and simple enough for the planner to inline.

-- Deterministic pseudo-random integer in [0, n) from the slot-th (0..3)
-- 32-bit slice of an md5 hex digest. One md5 per row can feed four choices.
CREATE FUNCTION pg_temp.pick(h text, slot integer, n integer) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT (('x' || substr(h, 1 + 8 * slot, 8))::bit(32)::bigint % n)::integer $$;

-- Shorthand for a single choice: pseudo-random integer in [0, n) from a seed.
CREATE FUNCTION pg_temp.rnd(seed text, n integer) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT pg_temp.pick(md5(seed), 0, n) $$;

-- ---------------------------------------------------------------------------
-- Users. Keep series number g -> uuid/sign-up time in a temp table: the
-- later steps address users by g and need their sign-up time.
-- Sign-ups are spread evenly over [epoch - 730 days, epoch - 60 days), so
-- the last 60 days before the epoch are left for activity.
-- ---------------------------------------------------------------------------
CREATE TEMP TABLE gen_users ON COMMIT DROP AS
SELECT g,
       md5('user' || g)::uuid AS id,
       (ARRAY['Alex', 'Sam', 'Jordan', 'Taylor', 'Morgan', 'Casey', 'Riley',
              'Jamie', 'Avery', 'Quinn', 'Emma', 'Olivia', 'Sophia', 'Mia',
              'Isabella', 'Lena', 'Nora', 'Chloe', 'Zoe', 'Hana', 'Liam',
              'Noah', 'Lucas', 'Mateo', 'Elias', 'Leo', 'Hugo', 'Finn',
              'Omar', 'Ravi', 'Kenji', 'Diego', 'Marta', 'Ines', 'Yara',
              'Ana', 'Priya', 'Aisha', 'Tomas', 'Jonas'])[1 + pg_temp.rnd('name:' || g, 40)]
           AS first_name,
       :'epoch'::timestamptz - interval '730 days'
           + ((g - 1) * (670 * 86400) / :users
              + pg_temp.rnd('signup:' || g, greatest(670 * 86400 / :users, 1)))
             * interval '1 second' AS created_at
FROM generate_series(1::bigint, :users) AS g;

CREATE UNIQUE INDEX ON gen_users (g);
ANALYZE gen_users;

-- Pool of word-like filler texts (md5 hex digits mapped onto common letters
-- and spaces) for bios and message bodies. translate() is too slow to run
-- per message, so each body is a slice of a pool entry instead. 16384
-- entries (4 MB) keep repeats far apart, so dump compression sees varied
-- text rather than a handful of copied strings.
CREATE TEMP TABLE gen_text ON COMMIT DROP AS
SELECT i,
       translate(md5('text:' || i || '/1') || md5('text:' || i || '/2')
                 || md5('text:' || i || '/3') || md5('text:' || i || '/4')
                 || md5('text:' || i || '/5') || md5('text:' || i || '/6')
                 || md5('text:' || i || '/7') || md5('text:' || i || '/8'),
                 '0123456789abcdef',
                 'etaoin shrdl ucm') AS t   -- 256 characters
FROM generate_series(0, 16383) AS i;

CREATE UNIQUE INDEX ON gen_text (i);
ANALYZE gen_text;

INSERT INTO public.users
       (id, email, password_hash, status, last_login_at, created_at, updated_at)
SELECT id,
       lower(first_name) || '.' || g || '@'
           || (ARRAY['example.com', 'example.net', 'example.org'])[1 + pg_temp.rnd('domain:' || g, 3)],
       -- bcrypt-shaped placeholder, never a real hash
       '$2b$12$' || substr(md5('pw1:' || g) || md5('pw2:' || g), 1, 53),
       CASE
           WHEN r < 90 THEN 'active'
           WHEN r < 96 THEN 'paused'
           WHEN r < 97 THEN 'banned'
           ELSE 'deleted'
       END,
       :'epoch'::timestamptz - pg_temp.rnd('login:' || g, 60 * 86400) * interval '1 second',
       created_at,
       created_at + pg_temp.rnd('uupd:' || g, 30 * 86400) * interval '1 second'
FROM gen_users,
     LATERAL (SELECT pg_temp.rnd('status:' || g, 100) AS r) AS s
ORDER BY g;

-- ---------------------------------------------------------------------------
-- Profiles: one per user.
-- ---------------------------------------------------------------------------
INSERT INTO public.user_profiles
       (id, display_name, bio, birth_date, gender, city, country_code,
        latitude, longitude, created_at, updated_at)
SELECT u.id,
       u.first_name,
       -- ~20% leave the bio empty; 60..240 characters otherwise
       CASE WHEN pg_temp.rnd('hasbio:' || u.g, 5) > 0
            THEN (SELECT substr(x.t, 1, 60 + pg_temp.rnd('biolen:' || u.g, 181))
                  FROM gen_text AS x
                  WHERE x.i = pg_temp.rnd('bio:' || u.g, 16384))
       END,
       -- ages 18..57 at the epoch
       :'epoch'::date - (18 * 365 + pg_temp.rnd('birth:' || u.g, 40 * 365)),
       (ARRAY['female', 'male', 'nonbinary', 'other'])
           [CASE WHEN r.gender < 47 THEN 1 WHEN r.gender < 94 THEN 2
                 WHEN r.gender < 98 THEN 3 ELSE 4 END],
       (ARRAY['Berlin', 'Paris', 'Madrid', 'Lisbon', 'Amsterdam', 'Vienna',
              'Prague', 'Warsaw', 'Stockholm', 'Dublin', 'London', 'Rome',
              'New York', 'Toronto', 'Chicago', 'Austin'])[r.city + 1],
       (ARRAY['DE', 'FR', 'ES', 'PT', 'NL', 'AT', 'CZ', 'PL', 'SE', 'IE',
              'GB', 'IT', 'US', 'CA', 'US', 'US'])[r.city + 1],
       -- city centre +/- ~0.1 degree
       (ARRAY[52.52, 48.857, 40.417, 38.722, 52.373, 48.208, 50.088, 52.23,
              59.329, 53.35, 51.507, 41.893, 40.713, 43.653, 41.878, 30.267])[r.city + 1]
           + (pg_temp.rnd('lat:' || u.g, 2001) - 1000) / 10000.0,
       (ARRAY[13.405, 2.352, -3.704, -9.139, 4.9, 16.373, 14.421, 21.012,
              18.069, -6.26, -0.128, 12.483, -74.006, -79.383, -87.63, -97.743])[r.city + 1]
           + (pg_temp.rnd('lon:' || u.g, 2001) - 1000) / 10000.0,
       u.created_at,
       u.created_at + pg_temp.rnd('pupd:' || u.g, 30 * 86400) * interval '1 second'
FROM gen_users AS u,
     LATERAL (SELECT pg_temp.rnd('gender:' || u.g, 100) AS gender,
                     pg_temp.rnd('city:' || u.g, 16) AS city) AS r
ORDER BY u.g;

-- ---------------------------------------------------------------------------
-- Preferences: one per user; `extra` holds the jsonb settings blob.
-- ---------------------------------------------------------------------------
INSERT INTO public.user_preferences
       (id, min_age, max_age, max_distance_km, interested_in, extra,
        created_at, updated_at)
SELECT u.id,
       18 + r.min_off,
       18 + r.min_off + 5 + pg_temp.rnd('maxage:' || u.g, 30),
       (ARRAY[5, 10, 25, 50, 100, 250])[1 + pg_temp.rnd('dist:' || u.g, 6)],
       CASE pg_temp.rnd('interest:' || u.g, 5)
           WHEN 0 THEN ARRAY['female']
           WHEN 1 THEN ARRAY['male']
           WHEN 2 THEN ARRAY['female', 'male']
           WHEN 3 THEN ARRAY['female', 'male', 'nonbinary', 'other']
           ELSE ARRAY['nonbinary', 'other']
       END,
       jsonb_build_object(
           'notifications', jsonb_build_object(
               'push',  pg_temp.rnd('push:' || u.g, 10) < 8,
               'email', pg_temp.rnd('mail:' || u.g, 10) < 3),
           'theme', (ARRAY['light', 'dark', 'system'])[1 + pg_temp.rnd('theme:' || u.g, 3)],
           'show_online_status', pg_temp.rnd('online:' || u.g, 4) > 0,
           'languages', CASE pg_temp.rnd('lang:' || u.g, 4)
                            WHEN 0 THEN '["en"]'::jsonb
                            WHEN 1 THEN '["en", "de"]'::jsonb
                            WHEN 2 THEN '["en", "es", "fr"]'::jsonb
                            ELSE '[]'::jsonb
                        END),
       u.created_at,
       u.created_at + pg_temp.rnd('prupd:' || u.g, 30 * 86400) * interval '1 second'
FROM gen_users AS u,
     LATERAL (SELECT pg_temp.rnd('minage:' || u.g, 15) AS min_off) AS r
ORDER BY u.g;

-- ---------------------------------------------------------------------------
-- Likes and matches.
--
-- User g likes 5..15 (mean 10) others. Like k targets g + offset (mod
-- users), offset in [k*step, (k+1)*step) with step = users/32: distinct
-- for each k, never 0 and always below users/2. So (from, to) pairs are
-- unique without any retry, and the return like of a match (offset
-- above users/2 from the other side) can never collide with a forward
-- like. 15% of forward likes are returned, which makes a match, so each
-- user ends up in ~3 matches.
--
-- "OFFSET 0" keeps a per-row md5 in its own subquery, evaluated once;
-- without it the planner inlines md5() into every use of the digest.
-- ---------------------------------------------------------------------------
CREATE TEMP TABLE gen_likes ON COMMIT DROP AS
SELECT a.g AS from_g,
       k,
       a.id AS from_id,
       b.id AS to_id,
       pg_temp.pick(h.h1, 2, 100) < 3 AS is_super,
       l.liked_at,
       -- the return like (= the match) follows within 5 days
       CASE WHEN pg_temp.pick(h.h1, 3, 100) < 15
            THEN l.liked_at + (600 + pg_temp.pick(h.h2, 0, 5 * 86400)) * interval '1 second'
       END AS matched_at
FROM gen_users AS a
CROSS JOIN LATERAL generate_series(1, 5 + pg_temp.rnd('nlikes:' || a.g, 11)) AS k
CROSS JOIN LATERAL (SELECT md5('like:' || a.g || ':' || k) AS h1,
                           md5('like2:' || a.g || ':' || k) AS h2
                    OFFSET 0) AS h
CROSS JOIN LATERAL (SELECT :users / 32 AS step) AS p
JOIN gen_users AS b
  ON b.g = (a.g - 1 + k * p.step + pg_temp.pick(h.h1, 0, p.step)) % :users + 1
-- a like happens within 20 days of the later of the two sign-ups
CROSS JOIN LATERAL (
    SELECT greatest(a.created_at, b.created_at)
               + (3600 + pg_temp.pick(h.h1, 1, 20 * 86400)) * interval '1 second'
           AS liked_at
) AS l;

-- Ids follow time order, as an identity column would in production.
INSERT INTO public.likes
       (id, from_user_id, to_user_id, is_super, created_at, updated_at)
SELECT row_number() OVER (ORDER BY created_at, from_g, k, back),
       from_user_id, to_user_id, is_super, created_at, created_at
FROM (
    SELECT from_g, k, false AS back, from_id AS from_user_id, to_id AS to_user_id,
           is_super, liked_at AS created_at
    FROM gen_likes
    UNION ALL
    SELECT from_g, k, true, to_id, from_id, false, matched_at
    FROM gen_likes
    WHERE matched_at IS NOT NULL
) AS s;

-- A match per returned like; the pair is stored as (smaller, larger uuid).
-- Also fixes each conversation's shape: 0..30 messages (mean 15), a
-- typical gap between them, and how many trailing ones are unread.
CREATE TEMP TABLE gen_matches ON COMMIT DROP AS
SELECT id, user1_id, user2_id, matched_at,
       pg_temp.rnd('nmsg:' || id, 31) AS n_msgs,
       5 + pg_temp.rnd('gap:' || id, 240) AS gap_minutes,
       pg_temp.rnd('unread:' || id, 3) AS n_unread
FROM (
    SELECT row_number() OVER (ORDER BY matched_at, from_g, k) AS id,
           least(from_id, to_id) AS user1_id,
           greatest(from_id, to_id) AS user2_id,
           matched_at
    FROM gen_likes
    WHERE matched_at IS NOT NULL
) AS m;

-- ~8% are undone 12-22 days after matching (after the last message).
INSERT INTO public.matches
       (id, user1_id, user2_id, matched_at, unmatched_at, created_at, updated_at)
SELECT id, user1_id, user2_id, matched_at, x.unmatched_at, matched_at,
       coalesce(x.unmatched_at, matched_at)
FROM gen_matches,
     LATERAL (SELECT CASE WHEN pg_temp.rnd('unmatch:' || id, 100) < 8
                          THEN matched_at + interval '12 days'
                               + pg_temp.rnd('unmatchat:' || id, 10 * 86400) * interval '1 second'
                     END AS unmatched_at) AS x
ORDER BY id;

-- ---------------------------------------------------------------------------
-- Messages: the bulk of the database.
-- Message j of a match is sent at matched_at + j*gap + jitter(< gap)
-- minutes, so a conversation is strictly time-ordered and lasts at most
-- ~5 days. The body is 40..200 characters cut from a pool text.
-- Ids are numbered (a sort) on narrow rows; the bodies are joined on
-- afterwards, and rows still arrive in id order, so no second sort.
-- ---------------------------------------------------------------------------
INSERT INTO public.messages
       (id, match_id, sender_id, receiver_id, body, sent_at, read_at,
        created_at, updated_at)
SELECT s.id,
       s.match_id,
       CASE WHEN s.from_1 THEN s.user1_id ELSE s.user2_id END,
       CASE WHEN s.from_1 THEN s.user2_id ELSE s.user1_id END,
       substr(x.t, 1 + s.body_off, s.body_len),
       s.sent_at,
       s.read_at,
       s.sent_at,
       coalesce(s.read_at, s.sent_at)
FROM (
    SELECT row_number() OVER (ORDER BY t.sent_at, m.id, j) AS id,
           m.id AS match_id,
           m.user1_id,
           m.user2_id,
           pg_temp.pick(h.h1, 0, 2) = 0 AS from_1,
           t.sent_at,
           CASE WHEN j <= m.n_msgs - m.n_unread
                THEN t.sent_at + (30 + pg_temp.pick(h.h1, 1, 2 * 86400)) * interval '1 second'
           END AS read_at,
           b.body_len,
           pg_temp.pick(h.h2, 0, 16384) AS text_i,
           -- any offset that still leaves body_len of the pool text's 256 characters
           pg_temp.pick(h.h2, 1, 256 - b.body_len + 1) AS body_off
    FROM gen_matches AS m
    CROSS JOIN LATERAL generate_series(1, m.n_msgs) AS j
    CROSS JOIN LATERAL (SELECT md5('msg:' || m.id || ':' || j) AS h1,
                               md5('msg2:' || m.id || ':' || j) AS h2
                        OFFSET 0) AS h
    CROSS JOIN LATERAL (SELECT 40 + pg_temp.pick(h.h1, 3, 161) AS body_len) AS b
    CROSS JOIN LATERAL (
        SELECT m.matched_at
               + (j * m.gap_minutes + pg_temp.pick(h.h1, 2, m.gap_minutes))
                 * interval '1 minute' AS sent_at
    ) AS t
) AS s
JOIN gen_text AS x ON x.i = s.text_i;

-- ---------------------------------------------------------------------------
-- Group memberships: 0..3 (mean 1.5) per user. Membership i picks group
-- (base + 5*i) mod 12, distinct for i = 0..2, so (user, group) is unique.
-- ---------------------------------------------------------------------------
INSERT INTO public.user_groups
       (id, user_id, group_name, role, created_at, updated_at)
SELECT row_number() OVER (ORDER BY u.g, i),
       u.id,
       (ARRAY['Hikers', 'Board games', 'Foodies', 'Runners', 'Book club',
              'Climbers', 'Film buffs', 'Dog people', 'Travelers',
              'Live music', 'Yoga', 'Gamers'])
           [(pg_temp.rnd('group:' || u.g, 12) + 5 * i) % 12 + 1],
       CASE WHEN pg_temp.rnd('mod:' || u.g || ':' || i, 100) < 2
            THEN 'moderator' ELSE 'member' END,
       u.created_at + pg_temp.rnd('joined:' || u.g || ':' || i, 30 * 86400) * interval '1 second',
       u.created_at + pg_temp.rnd('joined:' || u.g || ':' || i, 30 * 86400) * interval '1 second'
FROM gen_users AS u
CROSS JOIN LATERAL generate_series(0, pg_temp.rnd('ngroups:' || u.g, 4) - 1) AS i
ORDER BY 1;

-- Ids were supplied explicitly, so move each identity past the loaded rows;
-- otherwise the first default-id insert would hit a duplicate key.
-- (\gset stores the results in psql variables instead of printing them.)
SELECT setval(pg_get_serial_sequence('public.likes', 'id'),
              (SELECT max(id) FROM public.likes)) AS likes_seq,
       setval(pg_get_serial_sequence('public.matches', 'id'),
              (SELECT max(id) FROM public.matches)) AS matches_seq,
       setval(pg_get_serial_sequence('public.messages', 'id'),
              (SELECT max(id) FROM public.messages)) AS messages_seq,
       setval(pg_get_serial_sequence('public.user_groups', 'id'),
              (SELECT max(id) FROM public.user_groups)) AS user_groups_seq
\gset

COMMIT;

-- Fresh statistics, so the demo queries get sensible plans right away.
ANALYZE public.users, public.user_profiles, public.user_preferences,
        public.likes, public.matches, public.messages, public.user_groups;
