# Benchmark harness (e2e/bench). `make bench` (in the main Makefile) runs it in
# full; bench-smoke is its seconds-long version that `make test` runs so the
# harness cannot rot (it checks every scenario answers correctly and asserts
# no timing); go-bench runs the Go micro-benchmarks of the hot path.
.PHONY: bench-smoke go-bench

EXTRA_TESTS += bench-smoke

bench-smoke: envtest-bins
	$(GO) run ./e2e/bench -smoke

go-bench:
	$(GO) test -run '^$$' -bench . -benchmem ./webhook ./pullsecret
