# Man pages, generated at build time from the headers' doc blocks by
# scripts/tether-man.awk (POSIX awk; no other tool needed), so the pages and
# the header cannot drift: a doc block that lacks one of its labelled parts,
# or a TETHER_API declaration without a doc block, fails the build.
#
# Output: ${TETHER_MAN_DIR}/<function>.3 for every documented function and
# helper, and tether.7, the overview. TetherInstall.cmake installs them.

find_program(TETHER_AWK NAMES awk mawk gawk nawk busybox-awk)
mark_as_advanced(TETHER_AWK)
if(NOT TETHER_AWK)
  message(STATUS "tether: no awk found, man pages are not generated")
  return()
endif()

set(TETHER_MAN_DIR ${PROJECT_BINARY_DIR}/man)
set(_tether_man_headers include/tether.h ${TETHER_PUBLIC_PART_HEADERS})
set(_tether_man_deps scripts/tether-man.awk)
foreach(_h IN LISTS _tether_man_headers)
  list(APPEND _tether_man_deps ${PROJECT_SOURCE_DIR}/${_h})
endforeach()

# tether.7 is written last, so a failed run leaves it missing and the next
# build runs the generator again. Removing the directory first drops pages of
# functions that no longer exist.
add_custom_command(
  OUTPUT ${TETHER_MAN_DIR}/tether.7
  COMMAND ${CMAKE_COMMAND} -E rm -rf ${TETHER_MAN_DIR}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${TETHER_MAN_DIR}
  COMMAND ${TETHER_AWK} -v outdir=${TETHER_MAN_DIR} -v version=${PROJECT_VERSION}
          -f scripts/tether-man.awk ${_tether_man_headers}
  DEPENDS ${_tether_man_deps}
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
  COMMENT "Generating man pages from the headers' doc blocks"
  VERBATIM)
add_custom_target(tether_man ALL DEPENDS ${TETHER_MAN_DIR}/tether.7)
