"""Every timing constant the tests use, in one place. Margins are generous on purpose: the
tests assert behaviour and ordering, never speed."""

JOIN = 30.0  # seconds to wait for a test thread to finish before calling it hung
SETTLE = 10.0  # seconds to wait for background work (housekeeper, creators) to show
POLL = 0.01  # interval of polling loops
SHORT_TIMEOUT = 0.3  # a borrow timeout meant to expire
TINY = 0.05
LOCK_TIMEOUT = "5s"  # on the helpers' own connections: a leaked lock fails the next test now
STATEMENT_TIMEOUT = "60s"  # ...and a statement that hangs fails, rather than waiting out pytest-timeout
TIMEOUT_SLACK = 2.0  # a borrow that times out must do so within its timeout plus this (never the pool's 30 s)
