# bake: every target does its own set-up and is safe to run twice.
SHELL := /bin/bash
.PHONY: setup services build demo test test-fast test-unit test-it bench lint format format-check schema clean

setup:
	@bash scripts/setup.sh

services: setup
	@bash scripts/services.sh

build: setup

demo: services
	@bash scripts/demo.sh

test: services
	@node scripts/test.mjs unit it

# Everything but the slowest files (booted hosts, the AWS Packer run, faults, interrupts, the installed package, the rendering property tests), in three lanes.
test-fast: services
	@node scripts/test.mjs --fast unit it

test-unit: setup
	@node scripts/test.mjs unit

test-it: services
	@node scripts/test.mjs it

bench: services
	@bash bench/run.sh

# The formatter and the layers are checked, not remembered: CI runs both (.ci/run, make test).
FORMATTED = "src/**/*.{ts,cts}" "test/**/*.ts" "bench/**/*.ts" "scripts/**/*.mjs"

format: setup
	npx prettier --write --log-level warn $(FORMATTED)

format-check: setup
	npx prettier --check --log-level warn $(FORMATTED)

lint: format-check
	npx tsc -p tsconfig.json --noEmit
	shellcheck scripts/*.sh bench/*.sh .ci/run
	ansible-lint ansible/host.yml ansible/bake/host-before.yml ansible/bake/host-after.yml ansible/bake/up.yml ansible/bake/ec2-ami-tools.yml
	yamllint -d "{extends: relaxed, rules: {line-length: {max: 160}}}" bake.yml ansible

schema: setup
	@node dist/src/config/write-schema.js schema/bake.schema.json

clean:
	rm -rf dist .bake
