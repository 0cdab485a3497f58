package catalog

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// A Delta turns one version of a cluster's catalog into a later one: the
// services added or changed, the keys of those removed, and the new
// header. It is not signed: the receiver applies it to the catalog it
// holds at Base and accepts the result only if its ContentDigest is the
// one in the owner's signed head for the new version.
type Delta struct {
	// Base is the version the delta applies to.
	Base uint64
	// Removed are the keys ("namespace/name") of services removed.
	Removed []string
	// Changed has the new version's header (cluster, version, network,
	// gateways, ...) and the services added or changed, sorted by
	// namespace then name.
	Changed *Catalog
}

// DeltaLimits bound what a receiver spends on one delta, before it
// decodes or applies it.
type DeltaLimits struct {
	// MaxBytes is the largest encoded delta.
	MaxBytes int
	// MaxServices bounds the services added, changed or removed.
	MaxServices int
	// MaxCatalogServices bounds the services of the catalog that results.
	MaxCatalogServices int
}

var deltaMagic = [4]byte{'M', 'F', 'S', 'D'}

// deltaHeader precedes the compressed changed services in an encoded delta.
type deltaHeader struct {
	Base    uint64   `json:"base"`
	Removed []string `json:"removed,omitempty"`
}

// Encode returns the delta's wire form: magic, format, header length, the
// header (base, removed keys), then the changed catalog as a catalog is
// encoded (gzip JSON).
func (d *Delta) Encode() ([]byte, error) {
	hb, err := json.Marshal(deltaHeader{Base: d.Base, Removed: d.Removed})
	if err != nil {
		return nil, err
	}
	if len(hb) > maxHeaderBytes {
		return nil, fmt.Errorf("delta of %s to v%d: %w: %d removals", d.Changed.Cluster, d.Changed.Version, ErrOversize, len(d.Removed))
	}
	payload, err := encode(d.Changed)
	if err != nil {
		return nil, err
	}
	return frame(deltaMagic, hb, payload), nil
}

// DecodeDelta decodes an encoded delta within lim: the size first, then
// the header and the count of removals, then the changed services with
// the catalog decoder's bounds (MaxServices services, inflated size at
// most InflateRatio times MaxBytes). It checks the new header's format,
// cluster and version. Errors wrap ErrOversize, ErrDecode or ErrInvalid.
func DecodeDelta(b []byte, lim DeltaLimits) (*Delta, error) {
	if len(b) > lim.MaxBytes {
		return nil, fmt.Errorf("%w: delta of %d bytes, limit %d", ErrOversize, len(b), lim.MaxBytes)
	}
	if len(b) < 9 || !bytes.Equal(b[:4], deltaMagic[:]) || b[4] != FormatVersion {
		return nil, fmt.Errorf("%w: no delta magic", ErrDecode)
	}
	n := binary.BigEndian.Uint32(b[5:9])
	if uint64(n) > uint64(len(b)-9) {
		return nil, fmt.Errorf("%w: delta header length %d past end", ErrDecode, n)
	}
	if n > maxHeaderBytes {
		return nil, fmt.Errorf("%w: delta header of %d bytes, limit %d", ErrOversize, n, maxHeaderBytes)
	}
	var h deltaHeader
	if err := json.Unmarshal(b[9:9+n], &h); err != nil {
		return nil, fmt.Errorf("%w: delta header: %v", ErrDecode, err)
	}
	if len(h.Removed) > lim.MaxServices {
		return nil, fmt.Errorf("%w: delta removes %d services, limit %d", ErrOversize, len(h.Removed), lim.MaxServices)
	}
	dl := DefaultLimits()
	dl.MaxServices = lim.MaxServices
	dl.MaxInflatedBytes = InflateRatio * int64(lim.MaxBytes)
	c, err := decode(b[9+n:], dl)
	if err != nil {
		return nil, fmt.Errorf("delta: %w", err)
	}
	var p problems
	c.validateHeader(&p)
	if err := p.err(); err != nil {
		return nil, fmt.Errorf("delta of %s to v%d: %w: %w", c.Cluster, c.Version, ErrInvalid, err)
	}
	if h.Base == 0 || h.Base >= c.Version {
		return nil, fmt.Errorf("delta of %s to v%d: %w: base version %d", c.Cluster, c.Version, ErrInvalid, h.Base)
	}
	return &Delta{Base: h.Base, Removed: h.Removed, Changed: c}, nil
}

// compareKeys orders services by namespace, then name.
func compareKeys(a, b *ExportedService) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// Diff returns the delta from old to cur, whose services are both sorted
// by namespace then name, given their ServiceHashes.
func Diff(old, cur *Catalog, oldHashes, curHashes [][32]byte) *Delta {
	hdr := *cur
	hdr.Services = nil
	d := &Delta{Base: old.Version, Changed: &hdr}
	i, j := 0, 0
	for i < len(old.Services) || j < len(cur.Services) {
		switch {
		case j == len(cur.Services) || i < len(old.Services) && compareKeys(&old.Services[i], &cur.Services[j]) < 0:
			d.Removed = append(d.Removed, old.Services[i].Key())
			i++
		case i == len(old.Services) || compareKeys(&old.Services[i], &cur.Services[j]) > 0:
			hdr.Services = append(hdr.Services, cur.Services[j])
			j++
		default:
			if oldHashes[i] != curHashes[j] {
				hdr.Services = append(hdr.Services, cur.Services[j])
			}
			i++
			j++
		}
	}
	return d
}

// Size is the number of services the delta adds, changes or removes.
func (d *Delta) Size() int { return len(d.Removed) + len(d.Changed.Services) }

// Compose joins consecutive deltas (each one's base the previous one's
// version) into one from the first's base to the last's version.
func Compose(ds []*Delta) (*Delta, error) {
	if len(ds) == 0 {
		return nil, fmt.Errorf("compose: no deltas")
	}
	if len(ds) == 1 {
		return ds[0], nil
	}
	changed := map[string]ExportedService{}
	removed := map[string]bool{}
	for i, d := range ds {
		if i > 0 && d.Base != ds[i-1].Changed.Version {
			return nil, fmt.Errorf("compose: delta %d has base %d, the previous one ends at %d", i, d.Base, ds[i-1].Changed.Version)
		}
		for _, k := range d.Removed {
			delete(changed, k)
			removed[k] = true
		}
		for _, s := range d.Changed.Services {
			delete(removed, s.Key())
			changed[s.Key()] = s
		}
	}
	last := ds[len(ds)-1]
	hdr := *last.Changed
	hdr.Services = make([]ExportedService, 0, len(changed))
	for _, s := range changed {
		hdr.Services = append(hdr.Services, s)
	}
	slices.SortFunc(hdr.Services, func(a, b ExportedService) int { return compareKeys(&a, &b) })
	out := &Delta{Base: ds[0].Base, Changed: &hdr}
	for k := range removed {
		out.Removed = append(out.Removed, k)
	}
	slices.Sort(out.Removed)
	return out, nil
}

// Apply returns the catalog that d makes of base (held with its
// ServiceHashes), and the new catalog's ServiceHashes. base must be at
// d.Base. The result is bounded by lim.MaxCatalogServices before anything
// is built. The new services are hashed here; the caller compares
// ContentDigest of the result with the owner's signed head.
func (d *Delta) Apply(base *Catalog, baseHashes [][32]byte, lim DeltaLimits) (*Catalog, [][32]byte, error) {
	cur := d.Changed
	switch {
	case base.Version != d.Base:
		return nil, nil, fmt.Errorf("delta of %s to v%d: %w: base v%d, held v%d", cur.Cluster, cur.Version, ErrInvalid, d.Base, base.Version)
	case base.Cluster != cur.Cluster:
		return nil, nil, fmt.Errorf("delta of %s to v%d: %w: applied to a catalog of %s", cur.Cluster, cur.Version, ErrIdentity, base.Cluster)
	case len(baseHashes) != len(base.Services):
		return nil, nil, fmt.Errorf("delta of %s: %d hashes for %d services", cur.Cluster, len(baseHashes), len(base.Services))
	case len(base.Services)+len(cur.Services) > lim.MaxCatalogServices:
		return nil, nil, fmt.Errorf("delta of %s to v%d: %w: %d services held and %d changed, limit %d", cur.Cluster, cur.Version, ErrOversize, len(base.Services), len(cur.Services), lim.MaxCatalogServices)
	}
	for i := 1; i < len(cur.Services); i++ {
		if compareKeys(&cur.Services[i-1], &cur.Services[i]) >= 0 {
			return nil, nil, fmt.Errorf("delta of %s to v%d: %w: changed services not sorted or listed twice (%s)", cur.Cluster, cur.Version, ErrInvalid, cur.Services[i].Key())
		}
	}
	changedHashes, err := ServiceHashes(cur)
	if err != nil {
		return nil, nil, err
	}
	removed := make(map[string]bool, len(d.Removed))
	for _, k := range d.Removed {
		removed[k] = true
	}
	out := *cur
	out.Services = make([]ExportedService, 0, len(base.Services)+len(cur.Services))
	hashes := make([][32]byte, 0, cap(out.Services))
	i, j := 0, 0
	for i < len(base.Services) || j < len(cur.Services) {
		switch {
		case j == len(cur.Services) || i < len(base.Services) && compareKeys(&base.Services[i], &cur.Services[j]) < 0:
			if len(removed) == 0 || !removed[base.Services[i].Key()] {
				out.Services = append(out.Services, base.Services[i])
				hashes = append(hashes, baseHashes[i])
			}
			i++
		default:
			if i < len(base.Services) && compareKeys(&base.Services[i], &cur.Services[j]) == 0 {
				i++ // replaced
			}
			out.Services = append(out.Services, cur.Services[j])
			hashes = append(hashes, changedHashes[j])
			j++
		}
	}
	return &out, hashes, nil
}
