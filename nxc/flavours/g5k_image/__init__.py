"""g5k-image: role images deployed by Kadeploy through the Grid'5000 API."""
