// A go-libp2p peer speaking only /webrtc-direct, for interop tests of our listener and dialer
// (tests/interop/gopeer.py). Built by build.sh from the Go module proxy.
//
//	gopeer listen                       print {"addr": ...}, answer pings until stdin closes
//	gopeer dial ADDR [-version 1|2]     dial, ping once, print {"rtt_ms": ..., "remote": ...}
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	libp2pwebrtc "github.com/libp2p/go-libp2p/p2p/transport/webrtc"
	ma "github.com/multiformats/go-multiaddr"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gopeer: "+format+"\n", args...)
	os.Exit(1)
}

func emit(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: gopeer listen | gopeer dial ADDR [-version N]")
	}
	switch os.Args[1] {
	case "listen":
		fs := flag.NewFlagSet("listen", flag.ExitOnError)
		ip := fs.String("ip", "127.0.0.1", "address to listen on")
		fs.Parse(os.Args[2:])
		h, err := libp2p.New(
			libp2p.NoTransports,
			libp2p.Transport(libp2pwebrtc.New),
			libp2p.ListenAddrStrings(fmt.Sprintf("/ip4/%s/udp/0/webrtc-direct", *ip)),
			libp2p.DisableRelay(),
		)
		if err != nil {
			fail("new host: %v", err)
		}
		for _, a := range h.Addrs() {
			emit(map[string]string{"addr": a.Encapsulate(ma.StringCast("/p2p/" + h.ID().String())).String()})
			break
		}
		io.Copy(io.Discard, os.Stdin)
		h.Close()
	case "dial":
		fs := flag.NewFlagSet("dial", flag.ExitOnError)
		version := fs.Int("version", 1, "webrtc-direct dialer version (1 or 2)")
		if len(os.Args) < 3 {
			fail("dial needs an address")
		}
		fs.Parse(os.Args[3:])
		target, err := ma.NewMultiaddr(os.Args[2])
		if err != nil {
			fail("bad address: %v", err)
		}
		info, err := peer.AddrInfoFromP2pAddr(target)
		if err != nil {
			fail("bad address: %v", err)
		}
		h, err := libp2p.New(
			libp2p.NoTransports,
			libp2p.Transport(libp2pwebrtc.New, libp2pwebrtc.WithDialerVersion(*version)),
			libp2p.NoListenAddrs,
			libp2p.DisableRelay(),
		)
		if err != nil {
			fail("new host: %v", err)
		}
		defer h.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := h.Connect(ctx, *info); err != nil {
			fail("connect: %v", err)
		}
		res := <-ping.Ping(ctx, h, info.ID)
		if res.Error != nil {
			fail("ping: %v", res.Error)
		}
		remote := ""
		for _, c := range h.Network().ConnsToPeer(info.ID) {
			remote = c.RemoteMultiaddr().String()
		}
		emit(map[string]any{"rtt_ms": float64(res.RTT.Microseconds()) / 1000, "remote": remote})
	default:
		fail("unknown mode %q", os.Args[1])
	}
}
