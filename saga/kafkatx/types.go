package kafkatx

import "time"

// Header is one Kafka record header. Order is kept; keys may repeat.
type Header struct {
	Key   string
	Value []byte
}

// Record is a consumed record, copied out of the client so handlers never hold
// client-owned memory.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp time.Time
}

// Header returns the value of the first header named key, or nil.
func (r Record) Header(key string) []byte {
	return headerValue(r.Headers, key)
}

// Message is a record to produce inside the current transaction.
type Message struct {
	Topic   string
	Key     []byte
	Value   []byte
	Headers []Header

	// Unless pinned, the murmur2 partitioner hashes the key, the same function
	// Java clients use, so every producer puts one saga id on the same
	// partition number of every topic.
	partition int32
	pinned    bool
	// tracked asks the Sink for the offset Kafka gave the message.
	tracked bool
}

// NewMessage returns a message for topic, partitioned by key.
func NewMessage(topic string, key, value []byte, headers ...Header) Message {
	return Message{Topic: topic, Key: key, Value: value, Headers: headers}
}

// OnPartition returns m pinned to partition p instead of partitioned by key.
func (m Message) OnPartition(p int32) Message {
	m.partition, m.pinned = p, true
	return m
}

// Tracked returns m with its offset reported by Sink.Offsets once the
// transaction commits.
func (m Message) Tracked() Message {
	m.tracked = true
	return m
}

// Header returns the value of the first header named key, or nil.
func (m Message) Header(key string) []byte {
	return headerValue(m.Headers, key)
}

func headerValue(hs []Header, key string) []byte {
	for _, h := range hs {
		if h.Key == key {
			return h.Value
		}
	}
	return nil
}

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}
