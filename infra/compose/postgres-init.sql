-- The databases beside `driftloop` (the default one): lakeFS's metadata, Prefect's state,
-- driftloop's prediction log and its model registry (stages and history). Runs once, when the
-- postgres volume is created.
CREATE DATABASE lakefs;
CREATE DATABASE prefect;
CREATE DATABASE predictions;
CREATE DATABASE registry;
