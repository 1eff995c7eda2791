{
  "targets": [
    {
      "target_name": "vdx_native",
      "sources": [
        "native/addon.cc",
        "native/eventfd.cc",
        "native/mman.cc",
        "native/socket.cc",
        "native/epoll.cc",
        "native/uring.cc",
        "native/ioctl.cc",
        "native/netlink.cc",
        "native/sched.cc",
        "native/notify.cc",
        "native/clock.cc",
        "native/rbd.cc",
        "native/net.cc",
        "native/crypto.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-O2"],
      "cflags_cc!": ["-fno-exceptions"],
      "libraries": ["-ldl"]
    }
  ]
}
