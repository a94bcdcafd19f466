// Command etcd is a thin wrapper around go.etcd.io/etcd/server/v3/etcdmain.
//
// The upstream etcd main module (go.etcd.io/etcd/v3) uses replace directives
// and therefore cannot be built with "go install pkg@version"; requiring the
// server module from this wrapper module builds the same binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
