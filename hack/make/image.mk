# The release image, built without a container daemon (hack/image: go-containerregistry's mutate and layout).
#
#   make image                              OCI layout of linux/amd64 + linux/arm64 in bin/image, digest printed
#   make image-push REGISTRY=reg.example/x  the same, pushed as $(REGISTRY)/artifactory-pull-webhook:<appVersion>
#   make image-check                        two builds of this commit give one index digest (reproducible)

IMAGE_DIR := $(BIN)/image
# The chart's appVersion: the image tag the chart deploys by default.
IMAGE_VERSION ?= $(shell awk '/^appVersion:/ {gsub(/["\047]/, "", $$2); print $$2}' deploy/charts/artifactory-pull-webhook/Chart.yaml)

.PHONY: image image-push image-check image-version

image-version:
	@test -n "$(IMAGE_VERSION)" || { echo "no appVersion in the chart's Chart.yaml: set IMAGE_VERSION"; exit 2; }

image: image-version
	$(GO) run ./hack/image --out $(IMAGE_DIR) --version $(IMAGE_VERSION)

image-push: image-version
	@test -n "$(REGISTRY)" || { echo "usage: make image-push REGISTRY=registry.example/team"; exit 2; }
	$(GO) run ./hack/image --out $(IMAGE_DIR) --version $(IMAGE_VERSION) --push $(REGISTRY)/artifactory-pull-webhook:$(IMAGE_VERSION)

image-check: image-version
	@a=$$($(GO) run ./hack/image --out $(BIN)/image-a --version $(IMAGE_VERSION) | awk '{print $$2}'); \
	b=$$($(GO) run ./hack/image --out $(BIN)/image-b --version $(IMAGE_VERSION) | awk '{print $$2}'); \
	echo ">> two builds: $$a $$b"; rm -rf $(BIN)/image-a $(BIN)/image-a.spdx.json $(BIN)/image-b $(BIN)/image-b.spdx.json; \
	test -n "$$a" && test "$$a" = "$$b"
EXTRA_TESTS += image-check
