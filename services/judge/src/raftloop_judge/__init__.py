"""raftloop judge: scores ingested interactions and calibrates itself against reviewers."""
