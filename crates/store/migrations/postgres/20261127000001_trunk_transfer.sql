-- How live transfers leave a trunk: 'bridge' (dial and relay media through
-- us) or 'refer' (SIP REFER to the carrier, falling back to a bridge).
ALTER TABLE trunks ADD COLUMN transfer TEXT NOT NULL DEFAULT 'bridge';
