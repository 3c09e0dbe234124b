-- Where a session's stereo recording is kept: a key in the recording storage
-- (relative to the recordings directory), such as '<session id>.wav'.
ALTER TABLE sessions ADD COLUMN recording TEXT;
