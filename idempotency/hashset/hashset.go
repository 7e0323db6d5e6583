package hashset

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// addLua: KEYS[1] the record's hash, KEYS[2] the set of ids; ARGV[1] the
// id, then field, value pairs. Creates the record only if it does not
// exist, in one step with its membership, so a reader never sees one
// without the other.
const addLua = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
`

// Set is a set of records on one Redis: the set at Key holds the ids, and
// HashKey names each id's hash. It is safe for concurrent use.
type Set struct {
	rdb     redis.UniversalClient
	key     string
	hashKey func(id string) string
	add     *redis.Script
}

// New returns the Set of ids at key whose records are at hashKey(id). It
// does no I/O.
func New(rdb redis.UniversalClient, key string, hashKey func(id string) string) *Set {
	return &Set{rdb: rdb, key: key, hashKey: hashKey, add: redis.NewScript(addLua)}
}

// Load sends Add's script to Redis (see the domain stores' Load).
func (s *Set) Load(ctx context.Context) error { return s.add.Load(ctx, s.rdb).Err() }

// Add creates the record id with the given field, value pairs and reports
// true, or leaves an existing record exactly as it is and reports false:
// adding again (a restart that seeds, a second instance) must never reset
// a record that sagas are changing.
func (s *Set) Add(ctx context.Context, id string, fieldValues ...any) (bool, error) {
	if len(fieldValues) == 0 || len(fieldValues)%2 != 0 {
		return false, fmt.Errorf("hashset: add %s: %d field values, want pairs", id, len(fieldValues))
	}
	n, err := s.add.Run(ctx, s.rdb, []string{s.hashKey(id), s.key}, append([]any{id}, fieldValues...)...).Int()
	return n == 1, err
}

// Get returns the hash of id, empty when there is no such record.
func (s *Set) Get(ctx context.Context, id string) (map[string]string, error) {
	return s.rdb.HGetAll(ctx, s.hashKey(id)).Result()
}

// List returns the ids, sorted, and the hash of each, read in one
// pipeline. It is not one atomic read: a record may change between the
// set and its hash.
func (s *Set) List(ctx context.Context) (ids []string, hashes []map[string]string, err error) {
	ids, err = s.rdb.SMembers(ctx, s.key).Result()
	if err != nil {
		return nil, nil, err
	}
	slices.Sort(ids)
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, s.hashKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	hashes = make([]map[string]string, len(ids))
	for i, c := range cmds {
		hashes[i] = c.Val()
	}
	return ids, hashes, nil
}

// Int64 names a field of a hash that holds a base-10 int64, and where to
// put it.
type Int64 struct {
	Field string
	Dst   *int64
}

// ParseInt64s parses every field of fields from h into its Dst, in order,
// and stops at the first one that is missing or not an int64 with an error
// naming it ("field F is "v""). Lua writes these numbers, so a bad one is
// a corrupt record, never a user's mistake.
func ParseInt64s(h map[string]string, fields ...Int64) error {
	for _, f := range fields {
		n, err := strconv.ParseInt(h[f.Field], 10, 64)
		if err != nil {
			return fmt.Errorf("field %s is %q", f.Field, h[f.Field])
		}
		*f.Dst = n
	}
	return nil
}
