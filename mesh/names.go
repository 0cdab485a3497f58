package mesh

// IsDNS1123Label reports whether s is a DNS-1123 label as Kubernetes
// checks it (namespace names): 1-63 of a-z, 0-9 and '-', starting and
// ending with a letter or digit.
func IsDNS1123Label(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// IsDNS1035Label reports whether s is a DNS-1035 label (Service names): a
// DNS-1123 label that starts with a letter.
func IsDNS1035Label(s string) bool {
	return IsDNS1123Label(s) && s[0] >= 'a' && s[0] <= 'z'
}

// IsDNS1123Subdomain reports whether s is a DNS-1123 subdomain (most
// object names, ServiceAccounts among them): at most 253 bytes of
// DNS-1123 labels joined by '.'.
func IsDNS1123Subdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if !IsDNS1123Label(s[start:i]) {
				return false
			}
			start = i + 1
		}
	}
	return true
}

// IsLabelValue reports whether s is a non-empty Kubernetes label value
// (zones, regions, network names): at most 63 of A-Z, a-z, 0-9, '-', '_'
// and '.', starting and ending with a letter or digit.
func IsLabelValue(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	if !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}
