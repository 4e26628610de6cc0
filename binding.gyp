{
  "variables": {
    "napi_only%": 0
  },
  "targets": [
    {
      "target_name": "dmamem",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/export.cc",
        "native/memfd.cc",
        "native/mapping.cc",
        "native/teardown.cc",
        "native/advise.cc",
        "native/buffer.cc",
        "native/pagemap.cc",
        "native/sysinfo.cc",
        "native/futex.cc",
        "native/ipc.cc",
        "native/arena.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        "NAPI_VERSION=9",
        "NAPI_DISABLE_CPP_EXCEPTIONS",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS",
        "_GNU_SOURCE"
      ],
      "conditions": [
        ["napi_only==1", { "defines": ["DMAMEM_NAPI_ONLY"] }]
      ],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc": ["-std=c++20", "-O2"],
      "cflags!": ["-O3"],
      "cflags_cc!": ["-std=gnu++17", "-std=gnu++20", "-O3"]
    }
  ]
}
