package catalog

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Limits bound what a receiver spends on one catalog. The decoder enforces
// them while it reads, so a small envelope that inflates into a huge or
// deeply nested document is refused after reading at most MaxInflatedBytes
// and holding at most the capped number of services and endpoints. A zero
// field takes its DefaultLimits value.
type Limits struct {
	// MaxInflatedBytes is the largest catalog JSON read after
	// decompression. Verify lowers it further to InflateRatio times the
	// envelope limit.
	MaxInflatedBytes int64
	// MaxServices is the most services one catalog may list.
	MaxServices int
	// MaxEndpoints is the most endpoints one catalog may list, over all
	// its services.
	MaxEndpoints int
	// MaxMembers is the most members of any other JSON object or array
	// (ports of a service, fields of an object, unknown arrays).
	MaxMembers int
	// MaxStringBytes is the longest JSON string, after unescaping.
	MaxStringBytes int
	// MaxDepth is the deepest nesting of objects and arrays.
	MaxDepth int
}

// InflateRatio bounds the inflated catalog to this multiple of the
// envelope limit: meshfed's catalogs compress about 8:1, a catalog
// bomb compresses 1000:1.
const InflateRatio = 4

// DefaultLimits are generous for real catalogs: 20,000 services with
// 150,000 endpoints fit, a 10,000-service catalog with ten endpoints each
// inflates to about 20 MiB.
func DefaultLimits() Limits {
	return Limits{
		MaxInflatedBytes: 64 << 20,
		MaxServices:      20000,
		MaxEndpoints:     150000,
		MaxMembers:       1024,
		MaxStringBytes:   1024,
		MaxDepth:         16,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxInflatedBytes <= 0 {
		l.MaxInflatedBytes = d.MaxInflatedBytes
	}
	if l.MaxServices <= 0 {
		l.MaxServices = d.MaxServices
	}
	if l.MaxEndpoints <= 0 {
		l.MaxEndpoints = d.MaxEndpoints
	}
	if l.MaxMembers <= 0 {
		l.MaxMembers = d.MaxMembers
	}
	if l.MaxStringBytes <= 0 {
		l.MaxStringBytes = d.MaxStringBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	return l
}

// decode inflates b and decodes the catalog in one bounded pass: nothing
// beyond lim is read or kept. It checks the JSON's shape and types only;
// what the values mean is for Validate and the receiver's own checks.
func decode(b []byte, lim Limits) (*Catalog, error) {
	lim = lim.withDefaults()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: gzip: %v", ErrDecode, err)
	}
	zr.Multistream(false)
	return decodeJSON(zr, lim)
}

func decodeJSON(r io.Reader, lim Limits) (*Catalog, error) {
	cr := &capReader{r: r, left: lim.MaxInflatedBytes}
	p := &parser{r: bufio.NewReaderSize(cr, 32<<10), lim: lim, intern: map[string]string{}}
	var c Catalog
	err := p.catalog(&c)
	if err == nil {
		err = p.end()
	}
	if err != nil {
		if cr.over {
			return nil, fmt.Errorf("%w: inflates to more than %d bytes", ErrOversize, lim.MaxInflatedBytes)
		}
		if errors.Is(err, ErrOversize) {
			return nil, fmt.Errorf("at byte %d: %w", p.off, err)
		}
		return nil, fmt.Errorf("%w: at byte %d: %v", ErrDecode, p.off, err)
	}
	return &c, nil
}

// capReader reads at most left bytes and remembers whether r had more.
type capReader struct {
	r    io.Reader
	left int64
	over bool
}

var errInflateLimit = errors.New("inflate limit reached")

func (c *capReader) Read(b []byte) (int, error) {
	if c.left <= 0 {
		// One byte more tells a catalog of exactly the limit from a longer one.
		var one [1]byte
		if n, _ := io.ReadFull(c.r, one[:]); n > 0 {
			c.over = true
			return 0, errInflateLimit
		}
		return 0, io.EOF
	}
	if int64(len(b)) > c.left {
		b = b[:c.left]
	}
	n, err := c.r.Read(b)
	c.left -= int64(n)
	return n, err
}

// parser is a strict, bounded JSON reader for the catalog schema.
type parser struct {
	r     *bufio.Reader
	lim   Limits
	off   int64
	depth int
	// endpoints counts endpoints over the whole catalog.
	endpoints int
	scratch   []byte
	// keys holds the key being read at each depth, for error messages.
	keys [][]byte
	// intern shares the many equal strings of a catalog (namespaces,
	// zones, identities, protocols) between its services and endpoints.
	intern map[string]string
}

const maxInterned = 4096

func (p *parser) readByte() (byte, error) {
	c, err := p.r.ReadByte()
	if err != nil {
		if err == io.EOF {
			return 0, io.ErrUnexpectedEOF
		}
		return 0, err
	}
	p.off++
	return c, nil
}

// peek skips white space and returns the next byte without consuming it.
func (p *parser) peek() (byte, error) {
	for {
		c, err := p.readByte()
		if err != nil {
			return 0, err
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		_ = p.r.UnreadByte()
		p.off--
		return c, nil
	}
}

func (p *parser) expect(want byte) error {
	c, err := p.peek()
	if err != nil {
		return err
	}
	if c != want {
		return fmt.Errorf("want %q, found %q", want, c)
	}
	_, err = p.readByte()
	return err
}

// end accepts only white space after the catalog.
func (p *parser) end() error {
	c, err := p.peek()
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("data after the catalog: %q", c)
}

// null consumes a JSON null if one comes next.
func (p *parser) null() (bool, error) {
	c, err := p.peek()
	if err != nil || c != 'n' {
		return false, err
	}
	return true, p.literal("null")
}

func (p *parser) literal(word string) error {
	for i := 0; i < len(word); i++ {
		c, err := p.readByte()
		if err != nil {
			return err
		}
		if c != word[i] {
			return fmt.Errorf("invalid literal, want %s", word)
		}
	}
	return nil
}

// enter and leave track nesting.
func (p *parser) enter() error {
	p.depth++
	if p.depth > p.lim.MaxDepth {
		return fmt.Errorf("%w: nested deeper than %d", ErrOversize, p.lim.MaxDepth)
	}
	return nil
}

func (p *parser) leave() { p.depth-- }

// object reads an object (or null), calling member for each key with the
// reader at the value; member must consume the value. Keys known to the
// schema may appear once.
func (p *parser) object(member func(key []byte) error) error {
	if isNull, err := p.null(); isNull || err != nil {
		return err
	}
	if err := p.expect('{'); err != nil {
		return err
	}
	if err := p.enter(); err != nil {
		return err
	}
	defer p.leave()
	c, err := p.peek()
	if err != nil {
		return err
	}
	if c == '}' {
		_, err = p.readByte()
		return err
	}
	for n := 1; ; n++ {
		if n > p.lim.MaxMembers {
			return fmt.Errorf("%w: object with more than %d members", ErrOversize, p.lim.MaxMembers)
		}
		raw, err := p.rawString()
		if err != nil {
			return err
		}
		for len(p.keys) <= p.depth {
			p.keys = append(p.keys, nil)
		}
		key := append(p.keys[p.depth][:0], raw...)
		p.keys[p.depth] = key
		if err := p.expect(':'); err != nil {
			return err
		}
		if err := member(key); err != nil {
			return fmt.Errorf("%s: %w", strconv.QuoteToASCII(string(key[:min(len(key), 64)])), err)
		}
		c, err := p.peek()
		if err != nil {
			return err
		}
		_, _ = p.readByte()
		switch c {
		case ',':
		case '}':
			return nil
		default:
			return fmt.Errorf("want ',' or '}', found %q", c)
		}
	}
}

// array reads an array (or null), calling elem for each element; max
// bounds the number of elements.
func (p *parser) array(max int, what string, elem func() error) error {
	if isNull, err := p.null(); isNull || err != nil {
		return err
	}
	if err := p.expect('['); err != nil {
		return err
	}
	if err := p.enter(); err != nil {
		return err
	}
	defer p.leave()
	c, err := p.peek()
	if err != nil {
		return err
	}
	if c == ']' {
		_, err = p.readByte()
		return err
	}
	for n := 1; ; n++ {
		if n > max {
			return fmt.Errorf("%w: more than %d %s", ErrOversize, max, what)
		}
		if err := elem(); err != nil {
			return fmt.Errorf("%s[%d]: %w", what, n-1, err)
		}
		c, err := p.peek()
		if err != nil {
			return err
		}
		_, _ = p.readByte()
		switch c {
		case ',':
		case ']':
			return nil
		default:
			return fmt.Errorf("want ',' or ']', found %q", c)
		}
	}
}

// rawString reads a JSON string into the scratch buffer (valid until the
// next string), refusing one longer than MaxStringBytes.
func (p *parser) rawString() ([]byte, error) {
	if err := p.expect('"'); err != nil {
		return nil, err
	}
	buf := p.scratch[:0]
	defer func() { p.scratch = buf[:0] }()
	for {
		c, err := p.readByte()
		if err != nil {
			return nil, err
		}
		switch {
		case c == '"':
			// A catalog is written by encoding/json, which writes valid
			// UTF-8 only; anything else is not a catalog.
			if !utf8.Valid(buf) {
				return nil, errors.New("string is not valid UTF-8")
			}
			return buf, nil
		case c < 0x20:
			return nil, fmt.Errorf("control byte %#x in string", c)
		case c == '\\':
			if buf, err = p.escape(buf); err != nil {
				return nil, err
			}
		default:
			buf = append(buf, c)
		}
		if len(buf) > p.lim.MaxStringBytes {
			return nil, fmt.Errorf("%w: string longer than %d bytes", ErrOversize, p.lim.MaxStringBytes)
		}
	}
}

// escape decodes one backslash escape (the backslash read) onto buf.
func (p *parser) escape(buf []byte) ([]byte, error) {
	c, err := p.readByte()
	if err != nil {
		return nil, err
	}
	switch c {
	case '"', '\\', '/':
		return append(buf, c), nil
	case 'b':
		return append(buf, '\b'), nil
	case 'f':
		return append(buf, '\f'), nil
	case 'n':
		return append(buf, '\n'), nil
	case 'r':
		return append(buf, '\r'), nil
	case 't':
		return append(buf, '\t'), nil
	case 'u':
		r, err := p.hex4()
		if err != nil {
			return nil, err
		}
		if utf16.IsSurrogate(r) {
			// Only a valid pair is one rune; otherwise U+FFFD and the next
			// escape stands alone, as encoding/json reads it.
			d := utf8.RuneError
			if next, _ := p.r.Peek(6); len(next) == 6 && next[0] == '\\' && next[1] == 'u' {
				if r2, ok := parseHex4(next[2:]); ok {
					if d = utf16.DecodeRune(r, r2); d != utf8.RuneError {
						_, _ = p.r.Discard(6)
						p.off += 6
					}
				}
			}
			r = d
		}
		return utf8.AppendRune(buf, r), nil
	}
	return nil, fmt.Errorf("invalid escape \\%c", c)
}

func (p *parser) hex4() (rune, error) {
	var b [4]byte
	for i := range b {
		c, err := p.readByte()
		if err != nil {
			return 0, err
		}
		b[i] = c
	}
	r, ok := parseHex4(b[:])
	if !ok {
		return 0, fmt.Errorf("invalid \\u escape")
	}
	return r, nil
}

func parseHex4(b []byte) (rune, bool) {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// str reads a string (null: ""), sharing equal strings when intern is set.
func (p *parser) str(intern bool) (string, error) {
	if isNull, err := p.null(); isNull || err != nil {
		return "", err
	}
	b, err := p.rawString()
	if err != nil {
		return "", err
	}
	if !intern {
		return string(b), nil
	}
	if s, ok := p.intern[string(b)]; ok {
		return s, nil
	}
	s := string(b)
	if len(p.intern) < maxInterned {
		p.intern[s] = s
	}
	return s, nil
}

// uint reads a non-negative integer (null: 0) no larger than max.
func (p *parser) uint(max uint64) (uint64, error) {
	if isNull, err := p.null(); isNull || err != nil {
		return 0, err
	}
	var digits [20]byte
	n := 0
	for {
		c, err := p.r.ReadByte()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		if c < '0' || c > '9' {
			if c == '.' || c == 'e' || c == 'E' || c == '-' || c == '+' {
				return 0, fmt.Errorf("want a non-negative integer")
			}
			_ = p.r.UnreadByte()
			break
		}
		p.off++
		if n == len(digits) {
			return 0, fmt.Errorf("integer too long")
		}
		digits[n] = c
		n++
	}
	if n == 0 {
		return 0, fmt.Errorf("want a number")
	}
	if n > 1 && digits[0] == '0' {
		return 0, fmt.Errorf("number with a leading zero")
	}
	v, err := strconv.ParseUint(string(digits[:n]), 10, 64)
	if err != nil || v > max {
		return 0, fmt.Errorf("number %s out of range (max %d)", digits[:n], max)
	}
	return v, nil
}

func (p *parser) boolean() (bool, error) {
	c, err := p.peek()
	if err != nil {
		return false, err
	}
	switch c {
	case 't':
		return true, p.literal("true")
	case 'f':
		return false, p.literal("false")
	case 'n':
		return false, p.literal("null")
	}
	return false, fmt.Errorf("want true or false, found %q", c)
}

// optBool reads a boolean that may be null (nil).
func (p *parser) optBool() (*bool, error) {
	if isNull, err := p.null(); isNull || err != nil {
		return nil, err
	}
	b, err := p.boolean()
	return &b, err
}

func (p *parser) timestamp() (time.Time, error) {
	s, err := p.str(false)
	if err != nil || s == "" {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp %q: %v", s, err)
	}
	return t, nil
}

// skip reads and discards one value of any type, within the limits: a
// newer writer's fields are ignored, not trusted.
func (p *parser) skip() error {
	c, err := p.peek()
	if err != nil {
		return err
	}
	switch {
	case c == '{':
		return p.object(func([]byte) error { return p.skip() })
	case c == '[':
		return p.array(p.lim.MaxMembers, "elements", p.skip)
	case c == '"':
		_, err := p.rawString()
		return err
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return fmt.Errorf("unexpected %q", c)
}

// number consumes a JSON number of at most 64 bytes.
func (p *parser) number() error {
	var b []byte
	for {
		c, err := p.r.ReadByte()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if !(c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E') {
			_ = p.r.UnreadByte()
			break
		}
		p.off++
		if len(b) == 64 {
			return fmt.Errorf("%w: number longer than 64 bytes", ErrOversize)
		}
		b = append(b, c)
	}
	if _, err := strconv.ParseFloat(string(b), 64); err != nil && !errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("invalid number %q", b)
	}
	return nil
}

// grow appends a zero element, doubling the capacity when full: a catalog
// of n services or endpoints then allocates about 2n of them in all, where
// append's slower growth for large slices would allocate about 5n.
func grow[T any](s []T) []T {
	if len(s) == cap(s) {
		n := make([]T, len(s), max(8, 2*cap(s)))
		copy(n, s)
		s = n
	}
	var zero T
	return append(s, zero)
}

// known marks a schema key as seen, refusing a second one.
func known(seen *uint32, bit uint32, key []byte) error {
	if *seen&bit != 0 {
		return fmt.Errorf("key %q given twice", key)
	}
	*seen |= bit
	return nil
}

func (p *parser) catalog(c *Catalog) error {
	var seen uint32
	return p.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "format":
			if err = known(&seen, 1<<0, key); err == nil {
				var v uint64
				v, err = p.uint(1 << 16)
				c.Format = int(v)
			}
		case "cluster":
			if err = known(&seen, 1<<1, key); err == nil {
				c.Cluster, err = p.str(false)
			}
		case "network":
			if err = known(&seen, 1<<2, key); err == nil {
				c.Network, err = p.str(false)
			}
		case "version":
			if err = known(&seen, 1<<3, key); err == nil {
				c.Version, err = p.uint(1<<64 - 1)
			}
		case "generatedAt":
			if err = known(&seen, 1<<4, key); err == nil {
				c.GeneratedAt, err = p.timestamp()
			}
		case "trustBundleFingerprint":
			if err = known(&seen, 1<<5, key); err == nil {
				c.TrustBundleFingerprint, err = p.str(false)
			}
		case "gateways":
			if err = known(&seen, 1<<7, key); err == nil {
				err = p.array(MaxGateways, "gateways", func() error {
					g, err := p.str(false)
					c.Gateways = append(c.Gateways, g)
					return err
				})
			}
		case "services":
			if err = known(&seen, 1<<6, key); err == nil {
				err = p.array(p.lim.MaxServices, "services", func() error {
					c.Services = grow(c.Services)
					return p.service(&c.Services[len(c.Services)-1])
				})
			}
		default:
			err = p.skip()
		}
		return err
	})
}

func (p *parser) service(s *ExportedService) error {
	var seen uint32
	return p.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "namespace":
			if err = known(&seen, 1<<0, key); err == nil {
				s.Namespace, err = p.str(true)
			}
		case "name":
			if err = known(&seen, 1<<1, key); err == nil {
				s.Name, err = p.str(false)
			}
		case "ports":
			if err = known(&seen, 1<<2, key); err == nil {
				err = p.array(p.lim.MaxMembers, "ports", func() error {
					s.Ports = append(s.Ports, Port{})
					return p.port(&s.Ports[len(s.Ports)-1])
				})
			}
		case "endpoints":
			if err = known(&seen, 1<<3, key); err == nil {
				err = p.array(p.lim.MaxEndpoints, "endpoints", func() error {
					p.endpoints++
					if p.endpoints > p.lim.MaxEndpoints {
						return fmt.Errorf("%w: more than %d endpoints in the catalog", ErrOversize, p.lim.MaxEndpoints)
					}
					s.Endpoints = grow(s.Endpoints)
					return p.endpoint(&s.Endpoints[len(s.Endpoints)-1])
				})
			}
		case "failStatic":
			if err = known(&seen, 1<<4, key); err == nil {
				s.FailStatic, err = p.optBool()
			}
		case "exportedAt":
			if err = known(&seen, 1<<5, key); err == nil {
				s.ExportedAt, err = p.timestamp()
			}
		case "headless":
			if err = known(&seen, 1<<6, key); err == nil {
				s.Headless, err = p.boolean()
			}
		default:
			err = p.skip()
		}
		return err
	})
}

func (p *parser) port(pt *Port) error {
	var seen uint32
	return p.object(func(key []byte) error {
		var err error
		var v uint64
		switch string(key) {
		case "name":
			if err = known(&seen, 1<<0, key); err == nil {
				pt.Name, err = p.str(true)
			}
		case "port":
			if err = known(&seen, 1<<1, key); err == nil {
				v, err = p.uint(65535)
				pt.Port = uint16(v)
			}
		case "protocol":
			if err = known(&seen, 1<<2, key); err == nil {
				pt.Protocol, err = p.str(true)
			}
		case "targetPort":
			if err = known(&seen, 1<<3, key); err == nil {
				v, err = p.uint(65535)
				pt.TargetPort = uint16(v)
			}
		default:
			err = p.skip()
		}
		return err
	})
}

func (p *parser) endpoint(e *Endpoint) error {
	var seen uint32
	return p.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "address":
			if err = known(&seen, 1<<0, key); err == nil {
				e.Address, err = p.str(false)
			}
		case "ready":
			if err = known(&seen, 1<<1, key); err == nil {
				e.Ready, err = p.boolean()
			}
		case "zone":
			if err = known(&seen, 1<<2, key); err == nil {
				e.Zone, err = p.str(true)
			}
		case "identity":
			if err = known(&seen, 1<<3, key); err == nil {
				e.Identity, err = p.str(true)
			}
		default:
			err = p.skip()
		}
		return err
	})
}
