# The two commands of a fresh machine (each does its own set-up: Docker engine, venv, image).
.PHONY: test demo bench
test:      ## lint, type check, proto freshness, contrib packages, then the full test suite
	bash scripts/test.sh
demo:      ## start `fn-core serve` on embedded defaults, deploy the example function, invoke it
	bash scripts/demo.sh
bench:     ## benchmark suite -> bench/results/<UTC date>/ (make bench ARGS="--quick --only warm,cold")
	bash scripts/bench.sh $(ARGS)
