-- Bookkeeping of the SQL functions (created from the library's statements
-- at migration time, see sql_api) and of queue maintenance, which `stats`
-- reports on.

ALTER TABLE queue_rotation ADD COLUMN maintained_at timestamptz;

CREATE TABLE sql_functions (
    only_row     boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version      integer NOT NULL,
    digest       text NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now()
);
