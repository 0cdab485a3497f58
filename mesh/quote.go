package mesh

import (
	"strconv"
	"strings"
)

// MaxQuoted is how many bytes of a string Quote shows; the rest is
// summarised by its length.
const MaxQuoted = 128

// Quote returns s fit to print in a log line, a status field or a terminal
// when s may come from another cluster (service, namespace and cluster
// names, addresses, identities, reasons). A plain name (letters, digits and
// . _ - / : @ +) is returned unchanged, so `bookstore/bookstore` prints as
// itself; anything else is quoted Go-style with every byte outside
// printable ASCII escaped (no newlines, terminal escapes or bidi controls
// get through), and cut to MaxQuoted bytes with the number of bytes left
// out. The result is at most about 4*MaxQuoted+40 bytes.
func Quote(s string) string {
	if s != "" && len(s) <= MaxQuoted && plain(s) {
		return s
	}
	if len(s) <= MaxQuoted {
		return strconv.QuoteToASCII(s)
	}
	var b strings.Builder
	b.WriteString(strconv.QuoteToASCII(s[:MaxQuoted]))
	b.WriteString("...(+")
	b.WriteString(strconv.Itoa(len(s) - MaxQuoted))
	b.WriteString(" bytes)")
	return b.String()
}

// plain reports whether every byte of s is one that names and addresses
// are made of and that no terminal or log parser gives a meaning to.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == '-', c == '/', c == ':', c == '@', c == '+':
		default:
			return false
		}
	}
	return true
}
