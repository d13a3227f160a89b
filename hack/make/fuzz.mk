# Fuzz targets: package and function, one per line of FUZZ_TARGETS.
#
#   make fuzz-smoke   each target for FUZZ_SMOKE_TIME (CI, part of `make test`)
#   make fuzz-long    each target for FUZZ_LONG_TIME (a local soak; crashers land in
#                     <pkg>/testdata/fuzz/<Fuzz>/ and become regression seeds)
#
# Seed corpora live in <pkg>/testdata/fuzz/<Fuzz>/ and in each target's f.Add calls;
# plain `go test` (make unit) replays them all.

FUZZ_TARGETS := \
	./webhook:FuzzAdmissionReview \
	./webhook:FuzzReviewDecoder \
	./webhook:FuzzMatch \
	./config:FuzzParse \
	./credentials:FuzzExchangeResponse \
	./pullsecret:FuzzDockerConfigJSON
FUZZ_SMOKE_TIME ?= 5s
FUZZ_LONG_TIME ?= 10m
FUZZ_PARALLEL ?= 1

EXTRA_TESTS += fuzz-smoke

.PHONY: fuzz-smoke fuzz-long

fuzz-smoke:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo ">> fuzz $$fn ($$pkg) for $(FUZZ_SMOKE_TIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZ_SMOKE_TIME) -parallel=$(FUZZ_PARALLEL) $$pkg; \
	done

fuzz-long:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo ">> fuzz $$fn ($$pkg) for $(FUZZ_LONG_TIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZ_LONG_TIME) -parallel=$(FUZZ_PARALLEL) $$pkg; \
	done
