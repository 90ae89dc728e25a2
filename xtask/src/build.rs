//! Building the Lambda functions (filled in by the build work).
