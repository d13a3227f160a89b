# Mutation testing with gremlins (pinned in hack/tools/gremlins/go.mod): each mutant of the
# production code is run against the package's unit tests; a mutant that no test kills is
# a gap (or an equivalent mutant, explained in the README). Slow: not part of `make test`.
#
#   make mutation                   every package of MUTATION_PKGS, one report each in bin/mutation/
#   make mutation MUTATION_PKGS=./webhook

GREMLINS := $(BIN)/gremlins
MUTATION_PKGS ?= ./webhook ./credentials ./pullsecret ./config
MUTATION_WORKERS ?= 1

.PHONY: mutation

$(GREMLINS): hack/tools/gremlins/go.mod hack/tools/gremlins/go.sum
	@mkdir -p $(BIN)
	$(BUILDPROGRESS) gremlins hack/tools/gremlins -- $(GO) build -trimpath -ldflags "-s -w" -o $@ github.com/go-gremlins/gremlins/cmd/gremlins

mutation: $(GREMLINS)
	@mkdir -p $(BIN)/mutation
	@set -e; for p in $(MUTATION_PKGS); do \
		name=$$(basename $$p); echo ">> gremlins $$p"; \
		$(GREMLINS) unleash --workers $(MUTATION_WORKERS) --timeout-coefficient 3 \
			--output $(BIN)/mutation/$$name.json $$p | tee $(BIN)/mutation/$$name.txt | grep -E '^(Killed|Lived|Not covered|Timed out|Not viable|Test efficacy|Mutator coverage)'; \
	done
