package federation

import (
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// countingTransport wraps memberlist's NetTransport and counts the bytes it
// moves, so that gossip bandwidth is measured without memberlist's global
// go-metrics sink.
type countingTransport struct {
	*memberlist.NetTransport
	m        *metrics
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	done     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func newCountingTransport(nt *memberlist.NetTransport, m *metrics) *countingTransport {
	t := &countingTransport{
		NetTransport: nt, m: m,
		packetCh: make(chan *memberlist.Packet), streamCh: make(chan net.Conn),
		done: make(chan struct{}),
	}
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

func (t *countingTransport) forwardPackets() {
	defer t.wg.Done()
	in := t.NetTransport.PacketCh()
	for {
		select {
		case p := <-in:
			t.m.gossipBytes.WithLabelValues("received", "udp").Add(float64(len(p.Buf)))
			select {
			case t.packetCh <- p:
			case <-t.done:
				return
			}
		case <-t.done:
			return
		}
	}
}

func (t *countingTransport) forwardStreams() {
	defer t.wg.Done()
	in := t.NetTransport.StreamCh()
	for {
		select {
		case c := <-in:
			select {
			case t.streamCh <- &countingConn{Conn: c, m: t.m}:
			case <-t.done:
				_ = c.Close()
				return
			}
		case <-t.done:
			return
		}
	}
}

func (t *countingTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }
func (t *countingTransport) StreamCh() <-chan net.Conn           { return t.streamCh }

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t.m.gossipBytes.WithLabelValues("sent", "udp").Add(float64(len(b)))
	return t.NetTransport.WriteTo(b, addr)
}

func (t *countingTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	t.m.gossipBytes.WithLabelValues("sent", "udp").Add(float64(len(b)))
	return t.NetTransport.WriteToAddress(b, a)
}

func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := t.NetTransport.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, m: t.m}, nil
}

func (t *countingTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *countingTransport) Shutdown() error {
	err := t.NetTransport.Shutdown()
	t.stopOnce.Do(func() { close(t.done) })
	t.wg.Wait()
	return err
}

type countingConn struct {
	net.Conn
	m *metrics
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.m.gossipBytes.WithLabelValues("received", "tcp").Add(float64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.m.gossipBytes.WithLabelValues("sent", "tcp").Add(float64(n))
	return n, err
}
