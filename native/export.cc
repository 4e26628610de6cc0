// The gate in front of every exported function: see export.h.
#include "export.h"

#include <cmath>
#include <string>

#include "errors.h"
#include "teardown.h"

namespace dmamem {

namespace {

// One per exported function and environment; freed with the function object.
struct Exported {
  Napi::Function::Callback fn;
  const char* name;
  const char* signature;
  void* data;
};

bool IsTypedArrayOf(napi_env env, napi_value v, napi_typedarray_type want) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return false;
  napi_typedarray_type type;
  size_t length = 0;
  if (napi_get_typedarray_info(env, v, &type, &length, nullptr, nullptr, nullptr) != napi_ok) return false;
  return type == want;
}

bool Matches(napi_env env, napi_value v, char kind) {
  if (kind == 'a' || kind == 'n') {
    // One call: napi_number_expected for anything but a number.
    double d = 0;
    if (napi_get_value_double(env, v, &d) != napi_ok || !std::isfinite(d)) return false;
    return kind == 'n' || (d > 0 && d == std::floor(d));
  }
  napi_valuetype t = napi_undefined;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  switch (kind) {
    case 's': return t == napi_string;
    case 'b': return t == napi_boolean;
    case 'o': return t == napi_object;
    case 'u': return t == napi_object && IsTypedArrayOf(env, v, napi_uint8_array);
    case 'f': return t == napi_object && IsTypedArrayOf(env, v, napi_float64_array);
    case 'g': return t == napi_object && IsTypedArrayOf(env, v, napi_biguint64_array);
    default: return false;
  }
}

const char* KindName(char kind) {
  switch (kind) {
    case 'a': return "an address (an integer above 0)";
    case 'n': return "a finite number";
    case 's': return "a string";
    case 'b': return "a boolean";
    case 'o': return "an object";
    case 'u': return "a Uint8Array";
    case 'f': return "a Float64Array";
    case 'g': return "a BigUint64Array";
    default: return "?";
  }
}

// False once Node stopped letting this environment call into JS (a worker being terminated): the
// Node-API calls that may run JS then refuse with napi_pending_exception, so ask one that has no
// effect (about 50 ns, so only after a call that threw).
bool CanRunJs(napi_env env) {
  napi_value undefined = nullptr;
  bool equal = false;
  return napi_get_undefined(env, &undefined) == napi_ok && napi_strict_equals(env, undefined, undefined, &equal) == napi_ok;
}

napi_value Gate(napi_env env, napi_callback_info cbinfo) {
  Napi::CallbackInfo info(env, cbinfo);
  const auto* e = static_cast<const Exported*>(info.Data());
  EnvStatus* st = Status(env);
  if (st == nullptr) return nullptr;  // no instance data: the addon did not finish loading here
  if (st->halted) return nullptr;
  // Node drops the exception a call threw when JS stopped being callable before it returned: the JS
  // still running then took that call's undefined for its result, and nothing more may happen.
  if (st->threw) {
    st->threw = false;
    if (!CanRunJs(env)) {
      st->halted = true;
      return nullptr;
    }
  }
  for (size_t i = 0; e->signature[i] != '\0'; i++) {
    if (!Matches(env, info[i], e->signature[i])) {
      ThrowTypeError(env, std::string("dmamem native ") + e->name + ": argument " + std::to_string(i) + " must be " +
                              KindName(e->signature[i]));
      return nullptr;
    }
  }
  info.SetData(e->data);
  napi_value result = e->fn(info);
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) st->threw = true;
  return result;
}

}  // namespace

bool Export(Napi::Env env, Napi::Object exports, const char* name, Napi::Function::Callback fn, const char* signature,
            void* data) {
  auto* e = new Exported{fn, name, signature, data};
  napi_value f = nullptr;
  if (napi_create_function(env, name, NAPI_AUTO_LENGTH, Gate, e, &f) != napi_ok) {
    delete e;
    return false;
  }
  auto finalize = [](napi_env, void* p, void*) { delete static_cast<Exported*>(p); };
  if (napi_add_finalizer(env, f, e, finalize, nullptr, nullptr) != napi_ok) {
    delete e;
    return false;
  }
  return napi_set_named_property(env, exports, name, f) == napi_ok;
}

}  // namespace dmamem
