package mesh

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestQuoteEscapesHostileNames(t *testing.T) {
	cases := []struct{ in, want string }{
		{"bookstore/bookstore", "bookstore/bookstore"},
		{"spiffe://cluster.local/ns/bookstore/sa/bookstore", "spiffe://cluster.local/ns/bookstore/sa/bookstore"},
		{"10.244.1.5", "10.244.1.5"},
		{"fd00::1", "fd00::1"},
		{"", `""`},
		{"evil\nname", `"evil\nname"`},
		{"has space", `"has space"`},
		{"\x1b[31mred", `"\x1b[31mred"`},
		{"abc\u202edef", `"abc\u202edef"`},
		{"caf\xe9", `"caf\xe9"`},
		{`quo"te`, `"quo\"te"`},
	}
	for _, tc := range cases {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
	long := strings.Repeat("a", 10000)
	got := Quote(long)
	if !strings.HasSuffix(got, "...(+9872 bytes)") || len(got) > MaxQuoted+40 {
		t.Errorf("Quote of 10000 bytes = %q (%d bytes), want it cut to %d with the rest counted", got[:40], len(got), MaxQuoted)
	}
}

// FuzzQuote checks that whatever another cluster sends, Quote's output is
// bounded printable ASCII without newlines, and plain names pass unchanged.
func FuzzQuote(f *testing.F) {
	for _, s := range []string{"", "bookstore", "evil\nname", "\x1b]0;title\x07", "\u202e", "\xff\xfe", strings.Repeat("é", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := Quote(s)
		if len(q) > 4*MaxQuoted+40 {
			t.Fatalf("Quote(%q) is %d bytes", s, len(q))
		}
		if !utf8.ValidString(q) {
			t.Fatalf("Quote(%q) = %q is not UTF-8", s, q)
		}
		for i := 0; i < len(q); i++ {
			if q[i] < 0x20 || q[i] > 0x7e {
				t.Fatalf("Quote(%q) = %q has byte %#x", s, q, q[i])
			}
		}
		if plain(s) && s != "" && len(s) <= MaxQuoted && q != s {
			t.Fatalf("plain %q quoted as %q", s, q)
		}
	})
}
