// A go-libp2p AutoNAT v2 server and client (p2p/protocol/autonatv2), for interop tests of our
// autonat (tests/interop/test_autonat_go.py). Built by build.sh from the Go module proxy.
//
//	autonatpeer server [-ip IP]        print {"addr": ...}, serve /libp2p/autonat/2/dial-request
//	                                   (dial-backs from a second host) until stdin closes
//	autonatpeer client SERVER [-ip IP] [-check ADDR]... [-dialdata=false]
//	                                   listen on IP, connect to SERVER, ask it about -check (default:
//	                                   our own listen address), print the result as JSON
//
// Both run with autonatv2.AllowPrivateAddrs: every address here is inside a test netns.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/autonatv2"
	ma "github.com/multiformats/go-multiaddr"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "autonatpeer: "+format+"\n", args...)
	os.Exit(1)
}

func emit(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func newHost(listen string) host.Host {
	opts := []libp2p.Option{libp2p.DisableRelay(), libp2p.ResourceManager(nil)}
	if listen == "" {
		opts = append(opts, libp2p.NoListenAddrs)
	} else {
		opts = append(opts, libp2p.ListenAddrStrings(listen))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		fail("new host: %v", err)
	}
	return h
}

func newAutoNAT(h host.Host) *autonatv2.AutoNAT {
	dialer := newHost("")
	an, err := autonatv2.New(dialer, autonatv2.AllowPrivateAddrs,
		autonatv2.WithServerRateLimit(600, 600, 600, 4))
	if err != nil {
		fail("autonatv2: %v", err)
	}
	if err := an.Start(h); err != nil {
		fail("autonatv2 start: %v", err)
	}
	return an
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: autonatpeer server | autonatpeer client SERVER")
	}
	switch os.Args[1] {
	case "server":
		fs := flag.NewFlagSet("server", flag.ExitOnError)
		ip := fs.String("ip", "127.0.0.1", "address to listen on")
		fs.Parse(os.Args[2:])
		h := newHost(fmt.Sprintf("/ip4/%s/tcp/0", *ip))
		an := newAutoNAT(h)
		emit(map[string]string{"addr": h.Addrs()[0].Encapsulate(ma.StringCast("/p2p/" + h.ID().String())).String()})
		io.Copy(io.Discard, os.Stdin)
		an.Close()
		h.Close()
	case "client":
		fs := flag.NewFlagSet("client", flag.ExitOnError)
		ip := fs.String("ip", "127.0.0.1", "address to listen on")
		var checks multi
		fs.Var(&checks, "check", "address to check (repeatable)")
		dialData := fs.Bool("dialdata", true, "send dial data when the server asks")
		if len(os.Args) < 3 {
			fail("client needs the server's address")
		}
		fs.Parse(os.Args[3:])
		info, err := peer.AddrInfoFromString(os.Args[2])
		if err != nil {
			fail("bad server address: %v", err)
		}
		h := newHost(fmt.Sprintf("/ip4/%s/tcp/0", *ip))
		defer h.Close()
		an := newAutoNAT(h)
		defer an.Close()
		var reqs []autonatv2.Request
		for _, c := range checks {
			reqs = append(reqs, autonatv2.Request{Addr: ma.StringCast(c), SendDialData: *dialData})
		}
		if len(reqs) == 0 {
			reqs = append(reqs, autonatv2.Request{Addr: h.Addrs()[0], SendDialData: *dialData})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := h.Connect(ctx, *info); err != nil {
			fail("connect: %v", err)
		}
		// The server is known once identify has run on the connection.
		for {
			res, err := an.GetReachability(ctx, reqs)
			if errors.Is(err, autonatv2.ErrNoPeers) && ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			if err != nil {
				emit(map[string]any{"error": err.Error()})
				return
			}
			addr := ""
			if res.Addr != nil {
				addr = res.Addr.String()
			}
			emit(map[string]any{"addr": addr, "idx": res.Idx,
				"reachability": strings.ToLower(res.Reachability.String()),
				"all_refused": res.AllAddrsRefused})
			return
		}
	default:
		fail("unknown mode %q", os.Args[1])
	}
}
