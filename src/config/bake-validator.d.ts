// Declares the validator write-validator.ts generates into dist/src/config/ at set-up.
declare const validate: (value: unknown) => boolean;
export default validate;
export declare const schema: object;
