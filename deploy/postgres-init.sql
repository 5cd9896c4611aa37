-- The kiroku catalog's database, beside Prefect's (run once by the postgres image on first start).
-- Password: ALTER ROLE kiroku PASSWORD '...'; afterwards, by hand (never in this file).
CREATE ROLE kiroku LOGIN;
CREATE DATABASE kiroku OWNER kiroku ENCODING 'UTF8' TEMPLATE template0;
