-- The databases beside `driftloop` (the default one): lakeFS's metadata, Prefect's state, and
-- driftloop's prediction log. Runs once, when the postgres volume is created.
CREATE DATABASE lakefs;
CREATE DATABASE prefect;
CREATE DATABASE predictions;
