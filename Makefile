# artifactory-pull-webhook
#
#   make demo    run the whole stack locally (API server, emulators, registry, webhook) and show a pod patched
#   make test    unit tests (race detector) + end-to-end tests against a real kube-apiserver and etcd
#   make bench   the benchmark harness
#   make image   the release image (OCI layout, linux/amd64 + linux/arm64) without a container daemon
#
# The kube-apiserver and etcd used by envtest are built from the Go module proxy into bin/k8s
# (first run: about 10 minutes for kube-apiserver on 2 cores; rebuilt only when hack/tools/*/go.mod change).
# These builds (and helm's) print how many packages they have compiled every PROGRESS_INTERVAL
# seconds (default 30), through hack/buildprogress.sh.

GO ?= go
BIN := $(CURDIR)/bin
K8S_BIN := $(BIN)/k8s
KUBELET_KEYRING := $(BIN)/kubelet-keyring
KUBE_VERSION := $(shell awk '$$1=="k8s.io/kubernetes" {print $$2; exit}' hack/tools/kube-apiserver/go.mod)
KUBE_MINOR := $(word 2,$(subst ., ,$(KUBE_VERSION)))
# BUILDPROGRESS NAME DIR -- $(GO) build ...: the build in DIR, with a progress line every PROGRESS_INTERVAL seconds
BUILDPROGRESS := $(CURDIR)/hack/buildprogress.sh
export KUBEBUILDER_ASSETS := $(K8S_BIN)

UNIT_PKGS := ./config/... ./credentials/... ./pullsecret/... ./webhook/... ./certs/... ./metrics/... ./internal/... \
	./cmd/... ./e2e/awssig/... ./e2e/emulator/...
E2E_PKGS := ./e2e
# Further checks that `make test` runs, added by hack/make/*.mk (one file per concern: helm, fuzz, bench...).
EXTRA_TESTS :=
-include hack/make/*.mk

.PHONY: all build test unit e2e demo bench vet fmt check envtest-bins kubelet-keyring clean

all: build

build:
	$(GO) build -o $(BIN)/artifactory-pull-webhook ./cmd/artifactory-pull-webhook
	$(GO) build -o $(BIN)/artifactory-credential-provider ./cmd/artifactory-credential-provider

## envtest binaries, built from the Go module proxy
envtest-bins: $(K8S_BIN)/kube-apiserver $(K8S_BIN)/etcd

$(K8S_BIN)/kube-apiserver: hack/tools/kube-apiserver/go.mod hack/tools/kube-apiserver/go.sum
	@mkdir -p $(K8S_BIN)
	@echo ">> building kube-apiserver $(KUBE_VERSION) from the Go module proxy (first run: ~10 min on 2 cores; cached afterwards)"
	$(BUILDPROGRESS) kube-apiserver hack/tools/kube-apiserver -- $(GO) build -trimpath \
		-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(KUBE_MINOR)" \
		-o $@ k8s.io/kubernetes/cmd/kube-apiserver
	@$@ --version

$(K8S_BIN)/etcd: hack/tools/etcd/go.mod hack/tools/etcd/go.sum
	@mkdir -p $(K8S_BIN)
	@echo ">> building etcd from the Go module proxy (about a minute)"
	$(BUILDPROGRESS) etcd hack/tools/etcd -- $(GO) build -trimpath -ldflags "-s -w" -o $@ go.etcd.io/etcd/server/v3
	@$@ --version | head -1

# kubelet's own credential-provider plugin runner and keyring, for the credential provider's end-to-end
# tests; in the kube-apiserver tools module, so the Go build cache serves the packages both share.
kubelet-keyring: $(KUBELET_KEYRING)

$(KUBELET_KEYRING): hack/tools/kube-apiserver/go.mod hack/tools/kube-apiserver/go.sum hack/tools/kube-apiserver/kubelet-keyring/main.go
	@mkdir -p $(BIN)
	@echo ">> building kubelet's credential-provider plugin runner from the Go module proxy"
	$(BUILDPROGRESS) kubelet-keyring hack/tools/kube-apiserver -- $(GO) build -trimpath -ldflags "-s -w" -o $@ ./kubelet-keyring

## tests
test: unit e2e $(EXTRA_TESTS)

unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

e2e: envtest-bins $(KUBELET_KEYRING)
	KUBELET_KEYRING=$(KUBELET_KEYRING) $(GO) test -count=1 -timeout 20m $(E2E_PKGS)

check: vet fmt

vet:
	$(GO) vet ./...

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## demo: the real local stack; ARGS=--once exits after the showcase
demo: envtest-bins
	$(GO) run ./e2e/cmd/demo $(ARGS)

bench: envtest-bins
	$(GO) run ./e2e/bench $(ARGS)

clean:
	rm -rf $(BIN) .demo
