// A go-libp2p-kad-dht node (TCP only) driven over JSON lines, for interop tests of our Kademlia
// DHT (tests/interop/gokad.py). Built by ../build.sh from the Go module proxy.
//
//	gokad [-mode server|client]   print {"peer": ..., "addr": ...}, then one JSON command per
//	                              stdin line, one JSON reply per stdout line ({"ok": ...})
//
// Commands (keys and values in hex): connect {addr}, rt, find_peer {peer}, closest {key},
// put {key, value}, get {key}, provide {cid}, find_providers {cid}.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

type command struct {
	Cmd   string `json:"cmd"`
	Addr  string `json:"addr"`
	Peer  string `json:"peer"`
	Key   string `json:"key"`
	Value string `json:"value"`
	Cid   string `json:"cid"`
}

func emit(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gokad: "+format+"\n", args...)
	os.Exit(1)
}

func addrInfoJSON(ai peer.AddrInfo) map[string]any {
	addrs := []string{}
	for _, a := range ai.Addrs {
		addrs = append(addrs, a.String())
	}
	return map[string]any{"peer": ai.ID.String(), "addrs": addrs}
}

func main() {
	mode := flag.String("mode", "server", "server or client")
	ip := flag.String("ip", "127.0.0.1", "address to listen on")
	flag.Parse()
	h, err := libp2p.New(libp2p.ListenAddrStrings(fmt.Sprintf("/ip4/%s/tcp/0", *ip)), libp2p.DisableRelay())
	if err != nil {
		fail("new host: %v", err)
	}
	m := dht.ModeServer
	if *mode == "client" {
		m = dht.ModeClient
	}
	d, err := dht.New(h, dht.Mode(m))
	if err != nil {
		fail("new dht: %v", err)
	}
	addr := ""
	for _, a := range h.Addrs() {
		addr = a.String() + "/p2p/" + h.ID().String()
		break
	}
	emit(map[string]string{"peer": h.ID().String(), "addr": addr})
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var c command
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			emit(map[string]any{"ok": false, "error": err.Error()})
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := run(ctx, h.ID(), d, c)
		cancel()
		if err != nil {
			emit(map[string]any{"ok": false, "error": err.Error()})
		} else {
			res["ok"] = true
			emit(res)
		}
	}
	d.Close()
	h.Close()
}

func run(ctx context.Context, self peer.ID, d *dht.IpfsDHT, c command) (map[string]any, error) {
	h := d.Host()
	switch c.Cmd {
	case "connect":
		a, err := ma.NewMultiaddr(c.Addr)
		if err != nil {
			return nil, err
		}
		ai, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			return nil, err
		}
		if err := h.Connect(ctx, *ai); err != nil {
			return nil, err
		}
		// The peer joins the routing table once identify shows /ipfs/kad/1.0.0 and it answered
		// the DHT's lookup check (a FIND_NODE); wait for that (or report it did not happen).
		for d.RoutingTable().Find(ai.ID) == "" {
			select {
			case <-ctx.Done():
				return map[string]any{"in_rt": false}, nil
			case <-time.After(20 * time.Millisecond):
			}
		}
		return map[string]any{"in_rt": true}, nil
	case "rt":
		ps := []string{}
		for _, p := range d.RoutingTable().ListPeers() {
			ps = append(ps, p.String())
		}
		return map[string]any{"peers": ps}, nil
	case "find_peer":
		id, err := peer.Decode(c.Peer)
		if err != nil {
			return nil, err
		}
		ai, err := d.FindPeer(ctx, id)
		if err != nil {
			return nil, err
		}
		return addrInfoJSON(ai), nil
	case "closest":
		k, err := hex.DecodeString(c.Key)
		if err != nil {
			return nil, err
		}
		ids, err := d.GetClosestPeers(ctx, string(k))
		if err != nil {
			return nil, err
		}
		ps := []string{}
		for _, p := range ids {
			ps = append(ps, p.String())
		}
		return map[string]any{"peers": ps}, nil
	case "put":
		k, err := hex.DecodeString(c.Key)
		if err != nil {
			return nil, err
		}
		v, err := hex.DecodeString(c.Value)
		if err != nil {
			return nil, err
		}
		if err := d.PutValue(ctx, string(k), v); err != nil {
			return nil, err
		}
		return map[string]any{}, nil
	case "get":
		k, err := hex.DecodeString(c.Key)
		if err != nil {
			return nil, err
		}
		v, err := d.GetValue(ctx, string(k))
		if err != nil {
			return nil, err
		}
		return map[string]any{"value": hex.EncodeToString(v)}, nil
	case "provide":
		id, err := cid.Decode(c.Cid)
		if err != nil {
			return nil, err
		}
		if err := d.Provide(ctx, id, true); err != nil {
			return nil, err
		}
		return map[string]any{}, nil
	case "find_providers":
		id, err := cid.Decode(c.Cid)
		if err != nil {
			return nil, err
		}
		ais, err := d.FindProviders(ctx, id)
		if err != nil {
			return nil, err
		}
		out := []map[string]any{}
		for _, ai := range ais {
			if ai.ID != self {
				out = append(out, addrInfoJSON(ai))
			}
		}
		return map[string]any{"providers": out}, nil
	}
	return nil, fmt.Errorf("unknown command %q", c.Cmd)
}
