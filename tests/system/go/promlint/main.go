// promlint: what `promtool check metrics` says of a Prometheus text exposition, from Prometheus's own Go code
// (client_golang's promlint over common's expfmt parser): the text is read on stdin, each problem printed as
// "<metric>: <problem>"; exit 0 when there is none, 1 with problems, 2 when the text does not parse.
package main

import (
	"fmt"
	"os"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func main() {
	problems, err := promlint.New(os.Stdin).Lint()
	if err != nil {
		fmt.Println("does not parse:", err)
		os.Exit(2)
	}
	for _, problem := range problems {
		fmt.Printf("%s: %s\n", problem.Metric, problem.Text)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
}
