#pragma once
// The codec for mproc's shared-state handles (Lock, Event, Value...): a handle
// travels as the place of its shared object, never as a copy of it, so the
// receiving process uses the very same lock or value.

#include <mproc/detail/wire/bytes.hpp>

namespace mproc::detail {

/// Codec<Handle> for a Handle that is one SharedObject: Handle has a member
/// `state_`, a constructor taking it (which may check it further), and a
/// `type_label` for error messages; it befriends this struct.
template <class Handle>
struct ObjectHandleCodec {
  static void encode(Writer& w, const Handle& h) { h.state_.encode(w); }
  static Handle decode(Reader& r) { return Handle(decltype(Handle::state_)::decode(r, Handle::type_label)); }
};

}  // namespace mproc::detail
