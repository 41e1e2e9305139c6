//! What search sees of a message: header fields, attachment names and types,
//! and the text of its text parts, extracted with hard limits so that hostile
//! input costs bounded time and memory.

#![forbid(unsafe_code)]
