# rustproxy development commands. `make run` and `make test` are the quick start.
CARGO ?= cargo
BACKEND_PORTS := 7001 7002 7003 7004
RUN_DIR := target/run

.PHONY: all build release run deps test check fmt clippy bench fuzz soak readme-table clean stop-backends ops-check

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

deps:
	bash .ci/deps

# Start four local redis-servers (ports 7001-7004, no persistence) and the proxy with
# proxy.conf.example in the foreground (127.0.0.1:6380). Ctrl-C stops all of them.
run: deps release
	@mkdir -p $(RUN_DIR)
	@for p in $(BACKEND_PORTS); do \
	  redis-server --port $$p --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
	    --pidfile $(CURDIR)/$(RUN_DIR)/redis-$$p.pid --logfile $(CURDIR)/$(RUN_DIR)/redis-$$p.log \
	    --dir $(CURDIR)/$(RUN_DIR) ; \
	done
	@echo "backends on $(BACKEND_PORTS); proxy on 127.0.0.1:6380 (try: redis-cli -p 6380)"
	@trap '$(MAKE) --no-print-directory stop-backends' INT TERM EXIT; \
	  ./target/release/rustproxy -c proxy.conf.example

stop-backends:
	@for p in $(BACKEND_PORTS); do \
	  f=$(RUN_DIR)/redis-$$p.pid; [ -f $$f ] && kill $$(cat $$f) 2>/dev/null; rm -f $$f; \
	done; true

test: deps
	$(CARGO) test

check: fmt clippy test

# The operations examples (systemd unit, logrotate, Prometheus rules and dashboard, /ready, --top)
# through their validators and a real prometheus, with the validators' output shown (README
# "Operations"). Part of `make test` too.
ops-check: deps
	$(CARGO) test --test ops -- --nocapture

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

# Throughput against twemproxy and direct Redis, same run (see README "Benchmarks").
bench: release
	$(CARGO) build --release --example idle
	bash examples/bench.sh

# Coverage-guided fuzzing of the parsers, config and router (needs cargo-fuzz; FUZZ_SECONDS each).
fuzz:
	bash fuzz/run.sh

# Chaos and soak: random pipelined traffic checked against a model while backends are killed,
# paused and restarted (SOAK_SECONDS, default 60). Not part of `make test`.
SOAK_SECONDS ?= 60
soak: release
	$(CARGO) run --release --example soak -- --seconds $(SOAK_SECONDS)

# Regenerate the command table in README.md from src/commands.rs.
readme-table:
	$(CARGO) run -q --example commands_table > target/commands.md
	python3 -c 'import re,sys; r=open("README.md").read(); t=open("target/commands.md").read(); \
	  b="<!-- commands:begin -->\n"; e="<!-- commands:end -->"; i=r.index(b)+len(b); j=r.index(e); \
	  open("README.md","w").write(r[:i]+t+r[j:])'

clean:
	$(CARGO) clean
