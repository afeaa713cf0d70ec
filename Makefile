# The two commands of a fresh machine (each does its own set-up: Docker engine, venv, image).
.PHONY: test demo bench fuzz
test:      ## lint, type check, proto freshness, contrib packages, then the full test suite
	bash scripts/test.sh
demo:      ## start `fn-core serve` on embedded defaults, deploy the example function, invoke it
	bash scripts/demo.sh
bench:     ## benchmark suite -> bench/results/<UTC date>/ (make bench ARGS="--quick --only warm,cold")
	bash scripts/bench.sh $(ARGS)
fuzz:      ## every fuzzer in fuzz/ with its defaults (~10 min; needs `pip install -e .[fuzz]` in .venv): not part of `make test`
	@PY=$$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 ); status=0; \
	for f in api call_offer runner_replies container_answers h2_server h2_client hpack_decoder; do \
	    PYTHONPATH=. $$PY fuzz/$$f.py $(ARGS) || status=1; \
	done; exit $$status
