// Command bookapp is meshfed's demo workload (package demo/bookapp): the
// image meshfed/bookapp runs it.
package main

import (
	"errors"
	"flag"
	"log"

	"os"

	"github.com/meshfed/meshfed/demo/bookapp"
)

func main() {
	if err := bookapp.Main(os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		log.Fatal(err)
	}
}
