"""One module per console page (or group of pages), each exposing `router`: found and
included by `bastion.console.build_app`, in module-name order."""
