-- The user a consumer-protocol member authenticated as, when that user's
-- grants limit what it may see: its regular expression then matches only
-- topics the user has a grant on. NULL: no limit (authentication off, or
-- a super user).
ALTER TABLE group_members ADD COLUMN principal text;
