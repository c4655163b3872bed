--
-- PostgreSQL database dump
--

\restrict gqyZqoFHPckGCBREnMW3Bv3MTyJHSlY8Tyn1eDUv0FEYgMv7ViLnkJs8Nd0jEWW

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: alert_events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.alert_events (
    id integer NOT NULL,
    "time" double precision NOT NULL,
    rule character varying(128) NOT NULL,
    job character varying(128) NOT NULL,
    kind character varying(16) NOT NULL,
    metric character varying(32) NOT NULL,
    value double precision,
    threshold double precision,
    channel character varying(256) NOT NULL,
    subject text NOT NULL,
    message text NOT NULL,
    format character varying(8) NOT NULL,
    delivered_at double precision,
    error text NOT NULL
);


--
-- Name: alert_events_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.alert_events_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: alert_events_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.alert_events_id_seq OWNED BY public.alert_events.id;


--
-- Name: alert_state; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.alert_state (
    rule character varying(128) NOT NULL,
    job character varying(128) NOT NULL,
    metric character varying(32) NOT NULL,
    threshold double precision NOT NULL,
    channel character varying(256) NOT NULL,
    first_seen_at double precision NOT NULL,
    evaluated_at double precision NOT NULL,
    last_value double precision,
    firing_since double precision,
    last_notified_at double precision,
    last_sent_at double precision,
    pending_event_id integer,
    pending_tries integer NOT NULL
);


--
-- Name: attempts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.attempts (
    run_id character varying(40) NOT NULL,
    attempt integer NOT NULL,
    job character varying(128) NOT NULL,
    started_at double precision NOT NULL,
    finished_at double precision NOT NULL,
    status character varying(16) NOT NULL,
    error_type character varying(128) NOT NULL,
    error_message text NOT NULL,
    traceback text NOT NULL
);


--
-- Name: config_events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.config_events (
    id integer NOT NULL,
    "time" double precision NOT NULL,
    kind character varying(16) NOT NULL,
    job character varying(128) NOT NULL,
    detail text NOT NULL
);


--
-- Name: config_events_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.config_events_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: config_events_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.config_events_id_seq OWNED BY public.config_events.id;


--
-- Name: config_problems; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.config_problems (
    id integer NOT NULL,
    tab character varying(32) NOT NULL,
    cell character varying(16) NOT NULL,
    value text NOT NULL,
    problem text NOT NULL,
    severity character varying(8) NOT NULL
);


--
-- Name: config_problems_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.config_problems_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: config_problems_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.config_problems_id_seq OWNED BY public.config_problems.id;


--
-- Name: deliveries; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.deliveries (
    run_id character varying(64) NOT NULL,
    record_key character varying(500) NOT NULL,
    at double precision NOT NULL
);


--
-- Name: errors; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.errors (
    id integer NOT NULL,
    "time" double precision NOT NULL,
    job character varying(128) NOT NULL,
    run_id character varying(40) NOT NULL,
    stage character varying(64) NOT NULL,
    attempt integer NOT NULL,
    error_type character varying(128) NOT NULL,
    message text NOT NULL,
    record_key character varying(256) NOT NULL,
    traceback text NOT NULL
);


--
-- Name: errors_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.errors_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: errors_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.errors_id_seq OWNED BY public.errors.id;


--
-- Name: gauges; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.gauges (
    name character varying(128) NOT NULL,
    value double precision NOT NULL,
    updated_at double precision NOT NULL
);


--
-- Name: job_config; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_config (
    job character varying(128) NOT NULL,
    automation character varying(128) NOT NULL,
    schedule character varying(128) NOT NULL,
    timezone character varying(64) NOT NULL,
    enabled boolean NOT NULL,
    owner character varying(128) NOT NULL,
    notes text NOT NULL,
    published_at double precision NOT NULL
);


--
-- Name: job_state; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_state (
    job character varying(128) NOT NULL,
    last_fire_time double precision,
    last_run_id character varying(40),
    last_status character varying(16) NOT NULL,
    last_start double precision,
    last_end double precision,
    last_duration_s double precision,
    last_result text NOT NULL,
    records_in integer NOT NULL,
    records_out integer NOT NULL,
    records_failed integer NOT NULL,
    consecutive_failures integer NOT NULL,
    last_success_at double precision,
    updated_at double precision
);


--
-- Name: leases; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.leases (
    name character varying(64) NOT NULL,
    holder character varying(200) NOT NULL,
    expires_at double precision NOT NULL
);


--
-- Name: outbox; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.outbox (
    id integer NOT NULL,
    tab character varying(32) NOT NULL,
    key character varying(160) NOT NULL,
    created_at double precision NOT NULL,
    delivered_at double precision
);


--
-- Name: outbox_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.outbox_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: outbox_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.outbox_id_seq OWNED BY public.outbox.id;


--
-- Name: rollup_state; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rollup_state (
    name character varying(32) NOT NULL,
    refreshed_at double precision NOT NULL,
    seconds double precision NOT NULL
);


--
-- Name: run_requests; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.run_requests (
    id integer NOT NULL,
    job character varying(128) NOT NULL,
    dry_run boolean NOT NULL,
    requested_by character varying(128) NOT NULL,
    created_at double precision NOT NULL,
    claimed_at double precision,
    run_id character varying(40)
);


--
-- Name: run_requests_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.run_requests_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: run_requests_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.run_requests_id_seq OWNED BY public.run_requests.id;


--
-- Name: runs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.runs (
    id character varying(40) NOT NULL,
    job character varying(128) NOT NULL,
    trigger character varying(16) NOT NULL,
    scheduled_for double precision,
    started_at double precision,
    finished_at double precision,
    status character varying(16) NOT NULL,
    attempts integer NOT NULL,
    records_in integer NOT NULL,
    records_out integer NOT NULL,
    records_failed integer NOT NULL,
    duration_s double precision,
    result text NOT NULL,
    error_type character varying(128) NOT NULL,
    error_message text NOT NULL,
    dry_run boolean NOT NULL,
    requested_by character varying(128) NOT NULL
);


--
-- Name: runs_daily; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.runs_daily (
    day double precision NOT NULL,
    job character varying(128) NOT NULL,
    runs integer NOT NULL,
    queued integer NOT NULL,
    running integer NOT NULL,
    ok integer NOT NULL,
    failed integer NOT NULL,
    timeout integer NOT NULL,
    timed integer NOT NULL,
    records_in integer NOT NULL,
    records_out integer NOT NULL,
    records_failed integer NOT NULL,
    duration_sum double precision NOT NULL,
    duration_min double precision,
    duration_max double precision,
    last_start double precision,
    h00 integer NOT NULL,
    h01 integer NOT NULL,
    h02 integer NOT NULL,
    h03 integer NOT NULL,
    h04 integer NOT NULL,
    h05 integer NOT NULL,
    h06 integer NOT NULL,
    h07 integer NOT NULL,
    h08 integer NOT NULL,
    h09 integer NOT NULL,
    h10 integer NOT NULL,
    h11 integer NOT NULL,
    h12 integer NOT NULL,
    h13 integer NOT NULL,
    h14 integer NOT NULL,
    h15 integer NOT NULL,
    h16 integer NOT NULL,
    h17 integer NOT NULL,
    h18 integer NOT NULL,
    h19 integer NOT NULL,
    h20 integer NOT NULL,
    h21 integer NOT NULL,
    h22 integer NOT NULL,
    h23 integer NOT NULL,
    h24 integer NOT NULL,
    h25 integer NOT NULL,
    h26 integer NOT NULL,
    h27 integer NOT NULL,
    h28 integer NOT NULL,
    h29 integer NOT NULL,
    h30 integer NOT NULL,
    h31 integer NOT NULL,
    h32 integer NOT NULL,
    h33 integer NOT NULL,
    h34 integer NOT NULL,
    h35 integer NOT NULL,
    h36 integer NOT NULL,
    h37 integer NOT NULL,
    h38 integer NOT NULL,
    h39 integer NOT NULL,
    h40 integer NOT NULL,
    h41 integer NOT NULL,
    h42 integer NOT NULL,
    h43 integer NOT NULL,
    h44 integer NOT NULL,
    h45 integer NOT NULL,
    h46 integer NOT NULL,
    h47 integer NOT NULL,
    h48 integer NOT NULL,
    h49 integer NOT NULL,
    h50 integer NOT NULL,
    h51 integer NOT NULL,
    h52 integer NOT NULL,
    h53 integer NOT NULL,
    h54 integer NOT NULL,
    h55 integer NOT NULL,
    h56 integer NOT NULL,
    h57 integer NOT NULL,
    h58 integer NOT NULL,
    h59 integer NOT NULL,
    h60 integer NOT NULL,
    h61 integer NOT NULL,
    h62 integer NOT NULL,
    h63 integer NOT NULL,
    h64 integer NOT NULL,
    h65 integer NOT NULL,
    h66 integer NOT NULL,
    h67 integer NOT NULL,
    h68 integer NOT NULL,
    h69 integer NOT NULL,
    h70 integer NOT NULL,
    h71 integer NOT NULL
);


--
-- Name: runs_hourly; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.runs_hourly (
    hour double precision NOT NULL,
    job character varying(128) NOT NULL,
    runs integer NOT NULL,
    queued integer NOT NULL,
    running integer NOT NULL,
    ok integer NOT NULL,
    failed integer NOT NULL,
    timeout integer NOT NULL,
    timed integer NOT NULL,
    records_in integer NOT NULL,
    records_out integer NOT NULL,
    records_failed integer NOT NULL,
    duration_sum double precision NOT NULL,
    duration_min double precision,
    duration_max double precision,
    last_start double precision,
    h00 integer NOT NULL,
    h01 integer NOT NULL,
    h02 integer NOT NULL,
    h03 integer NOT NULL,
    h04 integer NOT NULL,
    h05 integer NOT NULL,
    h06 integer NOT NULL,
    h07 integer NOT NULL,
    h08 integer NOT NULL,
    h09 integer NOT NULL,
    h10 integer NOT NULL,
    h11 integer NOT NULL,
    h12 integer NOT NULL,
    h13 integer NOT NULL,
    h14 integer NOT NULL,
    h15 integer NOT NULL,
    h16 integer NOT NULL,
    h17 integer NOT NULL,
    h18 integer NOT NULL,
    h19 integer NOT NULL,
    h20 integer NOT NULL,
    h21 integer NOT NULL,
    h22 integer NOT NULL,
    h23 integer NOT NULL,
    h24 integer NOT NULL,
    h25 integer NOT NULL,
    h26 integer NOT NULL,
    h27 integer NOT NULL,
    h28 integer NOT NULL,
    h29 integer NOT NULL,
    h30 integer NOT NULL,
    h31 integer NOT NULL,
    h32 integer NOT NULL,
    h33 integer NOT NULL,
    h34 integer NOT NULL,
    h35 integer NOT NULL,
    h36 integer NOT NULL,
    h37 integer NOT NULL,
    h38 integer NOT NULL,
    h39 integer NOT NULL,
    h40 integer NOT NULL,
    h41 integer NOT NULL,
    h42 integer NOT NULL,
    h43 integer NOT NULL,
    h44 integer NOT NULL,
    h45 integer NOT NULL,
    h46 integer NOT NULL,
    h47 integer NOT NULL,
    h48 integer NOT NULL,
    h49 integer NOT NULL,
    h50 integer NOT NULL,
    h51 integer NOT NULL,
    h52 integer NOT NULL,
    h53 integer NOT NULL,
    h54 integer NOT NULL,
    h55 integer NOT NULL,
    h56 integer NOT NULL,
    h57 integer NOT NULL,
    h58 integer NOT NULL,
    h59 integer NOT NULL,
    h60 integer NOT NULL,
    h61 integer NOT NULL,
    h62 integer NOT NULL,
    h63 integer NOT NULL,
    h64 integer NOT NULL,
    h65 integer NOT NULL,
    h66 integer NOT NULL,
    h67 integer NOT NULL,
    h68 integer NOT NULL,
    h69 integer NOT NULL,
    h70 integer NOT NULL,
    h71 integer NOT NULL
);


--
-- Name: sheet_extent; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.sheet_extent (
    tab character varying(32) NOT NULL,
    rows integer NOT NULL
);


--
-- Name: alert_events id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alert_events ALTER COLUMN id SET DEFAULT nextval('public.alert_events_id_seq'::regclass);


--
-- Name: config_events id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.config_events ALTER COLUMN id SET DEFAULT nextval('public.config_events_id_seq'::regclass);


--
-- Name: config_problems id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.config_problems ALTER COLUMN id SET DEFAULT nextval('public.config_problems_id_seq'::regclass);


--
-- Name: errors id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.errors ALTER COLUMN id SET DEFAULT nextval('public.errors_id_seq'::regclass);


--
-- Name: outbox id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.outbox ALTER COLUMN id SET DEFAULT nextval('public.outbox_id_seq'::regclass);


--
-- Name: run_requests id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.run_requests ALTER COLUMN id SET DEFAULT nextval('public.run_requests_id_seq'::regclass);


--
-- Data for Name: alert_events; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.alert_events VALUES (1, 1789998800, 'orders-stuck', 'fetch-orders', 'fired', 'consecutive_failures', 2, 2, 'webhook:ops', '[sheetops] FIRING: orders-stuck — fetch-orders', 'orders-stuck for fetch-orders: consecutive failures is 2, at or above the threshold 2.

Rule:      orders-stuck (Alerts tab, row 2)
Job:       fetch-orders
Metric:    consecutive_failures = 2 (threshold 2)
Firing since 2026-09-21T13:53:20+00:00 (0.0s)
Time:      2026-09-21T13:53:20+00:00
', 'text', 1796228198.424157, '');
INSERT INTO public.alert_events VALUES (2, 1789998800, 'orders-failing', 'fetch-orders', 'fired', 'failure_rate', 0.2, 0.1, 'webhook:ops', '[sheetops] FIRING: orders-failing — fetch-orders', 'orders-failing for fetch-orders: failure rate over the last 1d 00h is 20%, at or above the threshold 10%.

Rule:      orders-failing (Alerts tab, row 3)
Job:       fetch-orders
Metric:    failure_rate = 20% (threshold 10%, window 1d 00h)
Firing since 2026-09-21T13:53:20+00:00 (0.0s)
Time:      2026-09-21T13:53:20+00:00
', 'text', 1796228198.4421275, '');
INSERT INTO public.alert_events VALUES (3, 1789998800, 'digest-slow', 'send-digest', 'fired', 'duration_p95_s', 10, 5, 'webhook:broken', '[sheetops] FIRING: digest-slow — send-digest', 'digest-slow for send-digest: 95th percentile run duration over the last 1d 00h is 10.0s, at or above the threshold 5.0s.

Rule:      digest-slow (Alerts tab, row 4)
Job:       send-digest
Metric:    duration_p95_s = 10.0s (threshold 5.0s, window 1d 00h)
Firing since 2026-09-21T13:53:20+00:00 (0.0s)
Time:      2026-09-21T13:53:20+00:00
', 'text', NULL, '');
INSERT INTO public.alert_events VALUES (4, 1789998800, 'digest-slow', 'send-digest', 'delivery_failed', 'duration_p95_s', 10, 5, 'webhook:broken', '[sheetops] FIRING: digest-slow — send-digest', 'could not deliver the fired message to webhook:broken (try 1): TransientHttpError: POST webhook:broken returned 500 Internal Server Error: {"error": "down"}; trying again at the next evaluation', 'text', NULL, 'TransientHttpError: POST webhook:broken returned 500 Internal Server Error: {"error": "down"}');
INSERT INTO public.alert_events VALUES (5, 1790000000, 'orders-stuck', 'fetch-orders', 'reminder', 'consecutive_failures', 2, 2, 'webhook:ops', '[sheetops] STILL FIRING: orders-stuck — fetch-orders', 'orders-stuck for fetch-orders: consecutive failures is 2, at or above the threshold 2.

Rule:      orders-stuck (Alerts tab, row 2)
Job:       fetch-orders
Metric:    consecutive_failures = 2 (threshold 2)
Firing since 2026-09-21T13:53:20+00:00 (20m 00s)
Time:      2026-09-21T14:13:20+00:00

This is a reminder: the alert is still firing.
', 'text', 1796228198.480911, '');
INSERT INTO public.alert_events VALUES (6, 1790000000, 'orders-failing', 'fetch-orders', 'resolved', 'failure_rate', 0.2, 0.5, 'webhook:ops', '[sheetops] RESOLVED: orders-failing — fetch-orders', 'orders-failing for fetch-orders is resolved: failure rate over the last 1d 00h is 20%, below the threshold 50%.

Rule:      orders-failing (Alerts tab, row 3)
Job:       fetch-orders
Metric:    failure_rate = 20% (threshold 50%, window 1d 00h)
Firing since 2026-09-21T13:53:20+00:00 (20m 00s)
Time:      2026-09-21T14:13:20+00:00
', 'text', 1796228198.4945068, '');
INSERT INTO public.alert_events VALUES (7, 1790000000, 'digest-slow', 'send-digest', 'reminder', 'duration_p95_s', 10, 5, 'webhook:broken', '[sheetops] STILL FIRING: digest-slow — send-digest', 'digest-slow for send-digest: 95th percentile run duration over the last 1d 00h is 10.0s, at or above the threshold 5.0s.

Rule:      digest-slow (Alerts tab, row 4)
Job:       send-digest
Metric:    duration_p95_s = 10.0s (threshold 5.0s, window 1d 00h)
Firing since 2026-09-21T13:53:20+00:00 (20m 00s)
Time:      2026-09-21T14:13:20+00:00

This is a reminder: the alert is still firing.
', 'text', NULL, '');
INSERT INTO public.alert_events VALUES (8, 1790000000, 'digest-slow', 'send-digest', 'delivery_failed', 'duration_p95_s', 10, 5, 'webhook:broken', '[sheetops] STILL FIRING: digest-slow — send-digest', 'could not deliver the reminder message to webhook:broken (try 1): TransientHttpError: POST webhook:broken returned 500 Internal Server Error: {"error": "down"}; trying again at the next evaluation', 'text', NULL, 'TransientHttpError: POST webhook:broken returned 500 Internal Server Error: {"error": "down"}');


--
-- Data for Name: alert_state; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.alert_state VALUES ('orders-stuck', 'fetch-orders', 'consecutive_failures', 2, 'webhook:ops', 1789998800, 1790000000, 2, 1789998800, 1790000000, 1796228198.480911, NULL, 0);
INSERT INTO public.alert_state VALUES ('orders-failing', 'fetch-orders', 'failure_rate', 0.5, 'webhook:ops', 1789998800, 1790000000, 0.2, NULL, 1789998800, 1796228198.4945068, NULL, 0);
INSERT INTO public.alert_state VALUES ('digest-slow', 'send-digest', 'duration_p95_s', 5, 'webhook:broken', 1789998800, 1790000000, 10, 1789998800, 1790000000, NULL, 7, 1);


--
-- Data for Name: attempts; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.attempts VALUES ('fetch-orders-fdf6ece48dbc', 1, 'fetch-orders', 1789989201, 1789989202, 'failed', 'HTTPError', '503 Server Error', 'Traceback (most recent call last):
  File "automations/http_get.py", line 42, in run
    resp.raise_for_status()
requests.HTTPError: 503 Server Error');
INSERT INTO public.attempts VALUES ('fetch-orders-fdf6ece48dbc', 2, 'fetch-orders', 1789989202, 1789989203, 'failed', 'HTTPError', '503 Server Error', 'Traceback (most recent call last):
  File "automations/http_get.py", line 42, in run
    resp.raise_for_status()
requests.HTTPError: 503 Server Error');
INSERT INTO public.attempts VALUES ('fetch-orders-fdf6ece48dbc', 3, 'fetch-orders', 1789989203, 1789989204, 'failed', 'HTTPError', '503 Server Error', 'Traceback (most recent call last):
  File "automations/http_get.py", line 42, in run
    resp.raise_for_status()
requests.HTTPError: 503 Server Error');


--
-- Data for Name: config_events; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.config_events VALUES (1, 1796228198.280365, 'refresh', '', '3 jobs');
INSERT INTO public.config_events VALUES (2, 1796228198.2803671, 'changed', 'fetch-orders', 'schedule every 5m -> every 10m');


--
-- Data for Name: config_problems; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.config_problems VALUES (1, 'Jobs', 'C5', 'every 10 parsecs', '''every 10 parsecs'' is not an interval', 'error');
INSERT INTO public.config_problems VALUES (2, 'Jobs', 'K3', 'x', 'unknown column ''x'' is ignored', 'warning');


--
-- Data for Name: deliveries; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.deliveries VALUES ('dry-run-0001', 'ops@example.com', 1796228198.3902745);


--
-- Data for Name: errors; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.errors VALUES (1, 1789989202, 'fetch-orders', 'fetch-orders-fdf6ece48dbc', 'run', 1, 'HTTPError', '503 Server Error', '', 'Traceback (most recent call last):
  File "automations/http_get.py", line 42, in run
    resp.raise_for_status()
requests.HTTPError: 503 Server Error');
INSERT INTO public.errors VALUES (2, 1789989203, 'fetch-orders', 'fetch-orders-fdf6ece48dbc', 'run', 2, 'HTTPError', '503 Server Error', '', 'Traceback (most recent call last):
  File "automations/http_get.py", line 42, in run
    resp.raise_for_status()
requests.HTTPError: 503 Server Error');
INSERT INTO public.errors VALUES (3, 1789989204, 'fetch-orders', 'fetch-orders-fdf6ece48dbc', 'run', 3, 'HTTPError', '503 Server Error', '', 'Traceback (most recent call last):
  File "automations/http_get.py", line 42, in run
    resp.raise_for_status()
requests.HTTPError: 503 Server Error');
INSERT INTO public.errors VALUES (4, 1789993400, 'fetch-orders', 'fetch-orders-1e4a2bbbc108', 'run', 1, 'Timeout', 'run exceeded timeout_s=600', '', '');
INSERT INTO public.errors VALUES (5, 1789985601, 'sync-crm', 'sync-crm-220c6a636cc3', 'enrich', 1, 'ValueError', 'bad e-mail in row 12', 'row 12', 'Traceback (most recent call last):
ValueError: bad e-mail');


--
-- Data for Name: gauges; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.gauges VALUES ('queue_depth:fetch', 7, 1796228198.283002);
INSERT INTO public.gauges VALUES ('queue_depth:enrich', 2, 1796228198.283002);
INSERT INTO public.gauges VALUES ('running', 1, 1796228198.283002);
INSERT INTO public.gauges VALUES ('last_refresh_at', 1789999970, 1796228198.283002);
INSERT INTO public.gauges VALUES ('last_refresh_ok', 1, 1796228198.283002);


--
-- Data for Name: job_config; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.job_config VALUES ('fetch-orders', 'http_get', 'every 10m', 'UTC', true, 'ana', '', 1796228198.338849);
INSERT INTO public.job_config VALUES ('send-digest', 'send_email', '0 7 * * 1-5', 'Europe/Paris', true, '', '', 1796228198.338849);
INSERT INTO public.job_config VALUES ('sync-crm', 'http_get', '@hourly', 'UTC', false, '', '', 1796228198.338849);


--
-- Data for Name: job_state; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.job_state VALUES ('fetch-orders', NULL, NULL, 'timeout', 1789992800, 1789993400, 600, '', 0, 0, 0, 2, 1789953200, 1796228198.2615607);
INSERT INTO public.job_state VALUES ('send-digest', NULL, NULL, 'ok', 1789974800, 1789974810, 10, '', 0, 0, 0, 0, 1789974810, 1796228198.2615607);
INSERT INTO public.job_state VALUES ('sync-crm', NULL, NULL, 'running', 1789999970, NULL, 1.5, '', 0, 0, 0, 1, 1789982007, 1796228198.2615607);


--
-- Data for Name: leases; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.leases VALUES ('scheduler', 'host-1:4242', 1796231798.3481438);


--
-- Data for Name: outbox; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.outbox VALUES (1, 'Runs', '', 1796228198.2615607, NULL);
INSERT INTO public.outbox VALUES (2, 'Status', 'fetch-orders', 1796228198.2615607, NULL);
INSERT INTO public.outbox VALUES (3, 'Errors', '', 1796228198.2615607, NULL);
INSERT INTO public.outbox VALUES (4, 'Validation', '', 1796228198.2782722, NULL);
INSERT INTO public.outbox VALUES (5, 'Runs', '', 1796228198.3428733, NULL);


--
-- Data for Name: rollup_state; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.rollup_state VALUES ('runs', 1790000000, 0.072291087999929);


--
-- Data for Name: run_requests; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.run_requests VALUES (1, 'fetch-orders', false, 'ana', 1796228198.3454635, NULL, NULL);


--
-- Data for Name: runs; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.runs VALUES ('fetch-orders-a74cf758715c', 'fetch-orders', 'schedule', 1789928000, 1789928000, 1789928001, 'ok', 1, 10, 10, 0, 1, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('fetch-orders-b07b9edab99d', 'fetch-orders', 'schedule', 1789931600, 1789931600, 1789931602, 'ok', 1, 10, 10, 0, 2, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('fetch-orders-44caaef37013', 'fetch-orders', 'schedule', 1789935200, 1789935200, 1789935203, 'ok', 1, 10, 10, 0, 3, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('fetch-orders-85fbb05bbdf1', 'fetch-orders', 'schedule', 1789938800, 1789938800, 1789938804, 'ok', 1, 10, 10, 0, 4, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('fetch-orders-e23435e5f153', 'fetch-orders', 'schedule', 1789942400, 1789942400, 1789942405, 'ok', 1, 10, 10, 0, 5, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('fetch-orders-5055a393e907', 'fetch-orders', 'schedule', 1789946000, 1789946000, 1789946006, 'ok', 1, 10, 10, 0, 6, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('fetch-orders-137d0dad7d8d', 'fetch-orders', 'schedule', 1789949600, 1789949600, 1789949607, 'ok', 1, 10, 10, 0, 7, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('fetch-orders-59be598577ae', 'fetch-orders', 'schedule', 1789953200, 1789953200, 1789953208, 'ok', 1, 10, 10, 0, 8, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('fetch-orders-fdf6ece48dbc', 'fetch-orders', 'schedule', 1789989200, 1789989200, 1789989204.5, 'failed', 3, 10, 7, 3, 4.5, '{}', 'HTTPError', '503 Server Error', false, '');
INSERT INTO public.runs VALUES ('fetch-orders-1e4a2bbbc108', 'fetch-orders', 'schedule', 1789992800, 1789992800, 1789993400, 'timeout', 1, 0, 0, 0, 600, '{}', 'Timeout', 'run exceeded timeout_s=600', false, '');
INSERT INTO public.runs VALUES ('fetch-orders-68471a57d19f', 'fetch-orders', 'schedule', 1789740800, 1789740800, 1789740801, 'ok', 1, 10, 10, 0, 1, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('fetch-orders-746ea8558dda', 'fetch-orders', 'schedule', 1789737200, 1789737200, 1789737201, 'ok', 1, 10, 10, 0, 1, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('fetch-orders-f8117cf013da', 'fetch-orders', 'schedule', 1789733600, 1789733600, 1789733601, 'ok', 1, 10, 10, 0, 1, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('fetch-orders-9360f5f69dc0', 'fetch-orders', 'schedule', 1789730000, 1789730000, 1789730001, 'ok', 1, 10, 10, 0, 1, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('fetch-orders-9a954c5d426e', 'fetch-orders', 'schedule', 1789726400, 1789726400, 1789726401, 'ok', 1, 10, 10, 0, 1, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('send-digest-de8c4c684352', 'send-digest', 'schedule', 1789964000, 1789964000, 1789964002, 'ok', 1, 5, 5, 0, 2, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('send-digest-dfde55d05938', 'send-digest', 'schedule', 1789967600, 1789967600, 1789967602, 'ok', 1, 5, 5, 0, 2, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('send-digest-86934a03a86b', 'send-digest', 'schedule', 1789971200, 1789971200, 1789971203, 'ok', 1, 5, 5, 0, 3, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('send-digest-f70beb6f31ff', 'send-digest', 'schedule', 1789974800, 1789974800, 1789974810, 'ok', 1, 5, 5, 0, 10, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('sync-crm-ff781b8435f3', 'sync-crm', 'schedule', 1789978400, 1789978400, 1789978405, 'ok', 1, 10, 10, 0, 5, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('sync-crm-f72b714e4fd3', 'sync-crm', 'schedule', 1789982000, 1789982000, 1789982007, 'ok', 1, 10, 10, 0, 7, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('sync-crm-220c6a636cc3', 'sync-crm', 'manual', 1789985600, 1789985600, 1789985601.5, 'failed', 1, 4, 3, 1, 1.5, '{}', 'ValueError', 'bad e-mail in row 12', false, '');
INSERT INTO public.runs VALUES ('sync-crm-3d261cad473d', 'sync-crm', 'schedule', 1789999970, 1789999970, NULL, 'running', 1, 10, 10, 0, NULL, '{}', '', '', false, '');
INSERT INTO public.runs VALUES ('dry-run-0001', 'send-digest', 'dashboard', 1789996400, 1789996400, 1789996400.25, 'ok', 1, 10, 10, 0, 0.25, '{}', '', '', true, 'ana');


--
-- Data for Name: runs_daily; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.runs_daily VALUES (1789689600, 'fetch-orders', 5, 0, 0, 5, 0, 0, 5, 50, 50, 0, 5, 1, 1, 1789740800, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_daily VALUES (1789862400, 'fetch-orders', 6, 0, 0, 6, 0, 0, 6, 60, 60, 0, 21, 1, 6, 1789946000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_daily VALUES (1789948800, 'fetch-orders', 4, 0, 0, 2, 1, 1, 4, 30, 27, 3, 619.5, 4.5, 600, 1789992800, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_daily VALUES (1789948800, 'send-digest', 5, 0, 0, 5, 0, 0, 5, 30, 30, 0, 17.25, 0.25, 10, 1789996400, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_daily VALUES (1789948800, 'sync-crm', 4, 0, 1, 2, 1, 0, 3, 34, 33, 1, 13.5, 1.5, 7, 1789999970, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);


--
-- Data for Name: runs_hourly; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.runs_hourly VALUES (1789974000, 'send-digest', 1, 0, 0, 1, 0, 0, 1, 5, 5, 0, 10, 10, 10, 1789974800, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789984800, 'sync-crm', 1, 0, 0, 0, 1, 0, 1, 4, 3, 1, 1.5, 1.5, 1.5, 1789985600, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789736400, 'fetch-orders', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 1, 1, 1, 1789737200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789725600, 'fetch-orders', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 1, 1, 1, 1789726400, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789966800, 'send-digest', 1, 0, 0, 1, 0, 0, 1, 5, 5, 0, 2, 2, 2, 1789967600, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789927200, 'fetch-orders', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 1, 1, 1, 1789928000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789938000, 'fetch-orders', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 4, 4, 4, 1789938800, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789732800, 'fetch-orders', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 1, 1, 1, 1789733600, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789988400, 'fetch-orders', 1, 0, 0, 0, 1, 0, 1, 10, 7, 3, 4.5, 4.5, 4.5, 1789989200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789945200, 'fetch-orders', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 6, 6, 6, 1789946000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789941600, 'fetch-orders', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 5, 5, 5, 1789942400, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789992000, 'fetch-orders', 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 600, 600, 600, 1789992800, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789995600, 'send-digest', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 0.25, 0.25, 0.25, 1789996400, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789999200, 'sync-crm', 1, 0, 1, 0, 0, 0, 0, 10, 10, 0, 0, NULL, NULL, 1789999970, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789930800, 'fetch-orders', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 2, 2, 2, 1789931600, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789934400, 'fetch-orders', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 3, 3, 3, 1789935200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789740000, 'fetch-orders', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 1, 1, 1, 1789740800, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789977600, 'sync-crm', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 5, 5, 5, 1789978400, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789963200, 'send-digest', 1, 0, 0, 1, 0, 0, 1, 5, 5, 0, 2, 2, 2, 1789964000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789981200, 'sync-crm', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 7, 7, 7, 1789982000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789948800, 'fetch-orders', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 7, 7, 7, 1789949600, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789729200, 'fetch-orders', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 1, 1, 1, 1789730000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789952400, 'fetch-orders', 1, 0, 0, 1, 0, 0, 1, 10, 10, 0, 8, 8, 8, 1789953200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
INSERT INTO public.runs_hourly VALUES (1789970400, 'send-digest', 1, 0, 0, 1, 0, 0, 1, 5, 5, 0, 3, 3, 3, 1789971200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);


--
-- Data for Name: sheet_extent; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Name: alert_events_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.alert_events_id_seq', 8, true);


--
-- Name: config_events_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.config_events_id_seq', 2, true);


--
-- Name: config_problems_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.config_problems_id_seq', 2, true);


--
-- Name: errors_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.errors_id_seq', 5, true);


--
-- Name: outbox_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.outbox_id_seq', 5, true);


--
-- Name: run_requests_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.run_requests_id_seq', 1, true);


--
-- Name: alert_events alert_events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alert_events
    ADD CONSTRAINT alert_events_pkey PRIMARY KEY (id);


--
-- Name: alert_state alert_state_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.alert_state
    ADD CONSTRAINT alert_state_pkey PRIMARY KEY (rule, job);


--
-- Name: attempts attempts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.attempts
    ADD CONSTRAINT attempts_pkey PRIMARY KEY (run_id, attempt);


--
-- Name: config_events config_events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.config_events
    ADD CONSTRAINT config_events_pkey PRIMARY KEY (id);


--
-- Name: config_problems config_problems_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.config_problems
    ADD CONSTRAINT config_problems_pkey PRIMARY KEY (id);


--
-- Name: deliveries deliveries_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.deliveries
    ADD CONSTRAINT deliveries_pkey PRIMARY KEY (run_id, record_key);


--
-- Name: errors errors_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.errors
    ADD CONSTRAINT errors_pkey PRIMARY KEY (id);


--
-- Name: gauges gauges_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.gauges
    ADD CONSTRAINT gauges_pkey PRIMARY KEY (name);


--
-- Name: job_config job_config_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_config
    ADD CONSTRAINT job_config_pkey PRIMARY KEY (job);


--
-- Name: job_state job_state_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_state
    ADD CONSTRAINT job_state_pkey PRIMARY KEY (job);


--
-- Name: leases leases_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.leases
    ADD CONSTRAINT leases_pkey PRIMARY KEY (name);


--
-- Name: outbox outbox_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.outbox
    ADD CONSTRAINT outbox_pkey PRIMARY KEY (id);


--
-- Name: rollup_state rollup_state_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rollup_state
    ADD CONSTRAINT rollup_state_pkey PRIMARY KEY (name);


--
-- Name: run_requests run_requests_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.run_requests
    ADD CONSTRAINT run_requests_pkey PRIMARY KEY (id);


--
-- Name: runs_daily runs_daily_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.runs_daily
    ADD CONSTRAINT runs_daily_pkey PRIMARY KEY (day, job);


--
-- Name: runs_hourly runs_hourly_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.runs_hourly
    ADD CONSTRAINT runs_hourly_pkey PRIMARY KEY (hour, job);


--
-- Name: runs runs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.runs
    ADD CONSTRAINT runs_pkey PRIMARY KEY (id);


--
-- Name: sheet_extent sheet_extent_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sheet_extent
    ADD CONSTRAINT sheet_extent_pkey PRIMARY KEY (tab);


--
-- Name: ix_alert_events_rule_job_time; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_alert_events_rule_job_time ON public.alert_events USING btree (rule, job, "time");


--
-- Name: ix_alert_events_time; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_alert_events_time ON public.alert_events USING btree ("time");


--
-- Name: ix_config_events_time; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_config_events_time ON public.config_events USING btree ("time");


--
-- Name: ix_errors_job_time; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_errors_job_time ON public.errors USING btree (job, "time");


--
-- Name: ix_errors_time; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_errors_time ON public.errors USING btree ("time");


--
-- Name: ix_outbox_pending; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_outbox_pending ON public.outbox USING btree (delivered_at, id);


--
-- Name: ix_run_requests_pending; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_run_requests_pending ON public.run_requests USING btree (claimed_at, id);


--
-- Name: ix_runs_dash_duration; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_runs_dash_duration ON public.runs USING btree (duration_s, started_at, job);


--
-- Name: ix_runs_dash_job_duration; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_runs_dash_job_duration ON public.runs USING btree (job, duration_s, started_at);


--
-- Name: ix_runs_dash_job_started; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_runs_dash_job_started ON public.runs USING btree (job, started_at, status, duration_s, records_in, records_out, records_failed);


--
-- Name: ix_runs_dash_started; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_runs_dash_started ON public.runs USING btree (started_at, status, duration_s, job);


--
-- Name: ix_runs_hourly_open; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_runs_hourly_open ON public.runs_hourly USING btree (hour) WHERE ((running + queued) > 0);


--
-- Name: ix_runs_job_started; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_runs_job_started ON public.runs USING btree (job, started_at);


--
-- Name: ix_runs_started; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_runs_started ON public.runs USING btree (started_at);


--
-- Name: ix_runs_status; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_runs_status ON public.runs USING btree (status);


--
-- PostgreSQL database dump complete
--

\unrestrict gqyZqoFHPckGCBREnMW3Bv3MTyJHSlY8Tyn1eDUv0FEYgMv7ViLnkJs8Nd0jEWW

