-- A digest of each loaded file's rows (order- and format-independent): a re-delivery of the same
-- rows as .gz, reordered or re-exported is refused as a duplicate even without event ids.
ALTER TABLE files ADD COLUMN content_digest VARCHAR;
