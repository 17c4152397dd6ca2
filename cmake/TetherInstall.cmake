# Install rules, kept apart from the build so a parent project that turns
# TETHER_INSTALL off never sees them. Everything installed is relocatable:
# the CMake package and the pkg-config file find the prefix from where they
# are, not from CMAKE_INSTALL_PREFIX.

include(CMakePackageConfigHelpers)

set(TETHER_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/tether"
    CACHE STRING "Where to install tetherConfig.cmake, relative to the prefix")
mark_as_advanced(TETHER_INSTALL_CMAKEDIR)

set(_tether_installed_libs tether_static)
if(TARGET tether_shared)
  list(APPEND _tether_installed_libs tether_shared)
endif()
# The interposition layer (exported as tether::interpose).
if(TARGET tether_interpose)
  list(APPEND _tether_installed_libs tether_interpose)
endif()

install(TARGETS ${_tether_installed_libs}
  EXPORT tetherTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT tether_Development
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT tether_Runtime
          NAMELINK_COMPONENT tether_Development
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT tether_Runtime)
install(FILES ${TETHER_PUBLIC_TOP_HEADERS}
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT tether_Development)
install(FILES ${TETHER_PUBLIC_PART_HEADERS}
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tether COMPONENT tether_Development)

# --- CMake package: find_package(tether) -> tether::tether -------------------
# The exported targets are tether::tether_shared / tether::tether_static;
# tetherConfig.cmake adds tether::tether for whichever was installed.
install(EXPORT tetherTargets
  NAMESPACE tether::
  DESTINATION ${TETHER_INSTALL_CMAKEDIR} COMPONENT tether_Development)
configure_package_config_file(cmake/tetherConfig.cmake.in
  ${PROJECT_BINARY_DIR}/tetherConfig.cmake
  INSTALL_DESTINATION ${TETHER_INSTALL_CMAKEDIR})
# The ABI follows SOVERSION (the major version), so does compatibility.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/tetherConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES
    ${PROJECT_BINARY_DIR}/tetherConfig.cmake
    ${PROJECT_BINARY_DIR}/tetherConfigVersion.cmake
  DESTINATION ${TETHER_INSTALL_CMAKEDIR} COMPONENT tether_Development)

# --- pkg-config: tether.pc ----------------------------------------------------
# The prefix is computed from ${pcfiledir} (where pkg-config found the file),
# so a moved prefix still works. That needs relative install dirs; an absolute
# one is written as is and makes the file non-relocatable.
set(TETHER_INSTALL_PKGCONFIGDIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(TETHER_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  # "lib/pkgconfig" -> "../..", "lib/x86_64-linux-gnu/pkgconfig" -> "../../..".
  file(RELATIVE_PATH _tether_up "/prefix/${TETHER_INSTALL_PKGCONFIGDIR}" "/prefix")
  string(REGEX REPLACE "/$" "" _tether_up "${_tether_up}")
  set(TETHER_PC_PREFIX "\${pcfiledir}/${_tether_up}")
endif()
foreach(_dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_dir}}")
    set(TETHER_PC_${_dir} "${CMAKE_INSTALL_${_dir}}")
  else()
    set(TETHER_PC_${_dir} "\${prefix}/${CMAKE_INSTALL_${_dir}}")
  endif()
endforeach()
configure_file(cmake/tether.pc.in ${PROJECT_BINARY_DIR}/tether.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/tether.pc
  DESTINATION ${TETHER_INSTALL_PKGCONFIGDIR} COMPONENT tether_Development)
if(TARGET tether_interpose)
  configure_file(cmake/tether-interpose.pc.in ${PROJECT_BINARY_DIR}/tether-interpose.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/tether-interpose.pc
    DESTINATION ${TETHER_INSTALL_PKGCONFIGDIR} COMPONENT tether_Development)
endif()

# --- man pages: share/man/man3/<function>.3, share/man/man7/tether.7 ---------
if(TARGET tether_man)
  install(DIRECTORY ${TETHER_MAN_DIR}/
    DESTINATION ${CMAKE_INSTALL_MANDIR}/man3 COMPONENT tether_Documentation
    FILES_MATCHING PATTERN "*.3")
  install(FILES ${TETHER_MAN_DIR}/tether.7
    DESTINATION ${CMAKE_INSTALL_MANDIR}/man7 COMPONENT tether_Documentation)
endif()

# --- licence and change log: share/doc/tether/ -------------------------------
install(FILES LICENSE CHANGELOG.md README.md
  DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT tether_Documentation)
