# One option picks the sanitizer for every tether target (library, tests,
# examples, bench). Flags are per target, like the warnings, so nothing leaks
# into a parent project.
#
#   TETHER_SANITIZE=address  ASan + UBSan; any UB report fails the run
#   TETHER_SANITIZE=thread   TSan

if(TETHER_SANITIZE STREQUAL "address")
  set(TETHER_SANITIZE_FLAGS
      -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
elseif(TETHER_SANITIZE STREQUAL "thread")
  set(TETHER_SANITIZE_FLAGS -fsanitize=thread)
elseif(TETHER_SANITIZE STREQUAL "")
  set(TETHER_SANITIZE_FLAGS "")
else()
  message(FATAL_ERROR "TETHER_SANITIZE must be '', 'address' or 'thread', not '${TETHER_SANITIZE}'")
endif()

# Compile and link flags both: the runtime comes in at link time. Every
# executable linking a sanitized tether must get them too, so apply this to
# tests, examples and benchmarks as well as the library.
function(tether_target_sanitize target)
  if(TETHER_SANITIZE_FLAGS)
    target_compile_options(${target} PRIVATE ${TETHER_SANITIZE_FLAGS})
    target_link_options(${target} PRIVATE ${TETHER_SANITIZE_FLAGS})
  endif()
endfunction()
