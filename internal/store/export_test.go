package store

// MigrateTo applies the migrations up to version, for tests that build a
// database of an older schema.
var MigrateTo = migrateTo
