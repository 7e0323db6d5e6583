// Package hashset keeps records in Redis as one hash per record plus a set
// of the records' ids: the layout of stock's catalogue and payment's
// accounts. It creates a record once (never resetting one that exists),
// lists the records in one pipeline, and parses a hash's int64 fields.
// What a record's fields mean, and the scripts that move them, stay in
// each domain package.
package hashset
